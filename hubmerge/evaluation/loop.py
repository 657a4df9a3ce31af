"""The evaluation loop: DataLoader passes that feed every batch to one or several models.

Internal to :mod:`hubmerge.evaluation`. A *job* is one report row on one task (how to load the model
with that task's head, and whose processor it uses). Jobs of a task that share a processor share a
pass over the data: each batch is decoded and preprocessed once (in the DataLoader's workers) and
given to every model of the pass, as many models as fit in a parameter budget. Accuracy and loss
accumulate in hubmerge's ``evaluate`` metrics (:mod:`hubmerge.metrics`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CancelledError, DatasetError, HeadMismatchError, RecipeError
from .data import LabelMatch, TaskData, label_targets, load_task_data, names_differ
from .report import TaskResult

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from PIL.Image import Image as PILImage
    from rich.console import Console, RenderableType
    from rich.progress import Progress, ProgressColumn, Task

    from ..recipe import DatasetRef, ModelRef

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EvalProgress",
    "Job",
    "Processor",
    "Settings",
    "check_match_labels",
    "check_max_samples",
    "location",
    "make_settings",
    "progress_bars",
    "run_jobs",
    "run_pass",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
#: What ``hubmerge.vision.processors.load_processor`` returns: images -> pixel tensor.
Processor = Callable[[list["PILImage"]], "torch.Tensor"]
#: ``(what, images done, images in all)`` as a pass over a task's data starts (0 done) and after each batch, and
#: ``(what, 0, 0)`` as a load starts (a dataset, a model: maybe a download): progress for a page (the web app),
#: where no console draws the bars.
EvalProgress = Callable[[str, int, int], None]

# A pass over a task's data stops taking more models once those it has hold this many parameter
# bytes: 2 GiB is six ConvNeXt-base models in float32 (a few more as the last one may overshoot).
_PASS_PARAMETER_BYTES = 2 * 2**30
# Below this many batches, DataLoader workers cost more to start than they save (measured on the
# fixtures, 2 cores: 449 images take 0.12 s without workers and 0.29 s with 2, most of it forking).
_MIN_BATCHES_FOR_WORKERS = 8
# The ETA is the rate over the whole pass (every batch costs the same). rich's default keeps 30 s of samples: a
# batch slower than that (64 images through one ConvNeXt-base take ~30 s on 2 cores, through six minutes) left
# one sample, no rate, and the ETA read -:--:-- through the whole evaluation.
_ETA_WINDOW_S = float("inf")


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How a run evaluates: device, batching, label matching, autocast, progress bars (and ``on_progress``);
    ``cancel`` stops it before the next model's batch, or its next load."""

    device: torch.device
    batch_size: int
    num_workers: int | None
    match_labels: LabelMatch
    autocast: bool
    progress: Progress | None
    cancel: threading.Event | None = None
    on_progress: EvalProgress | None = None

    def check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("the evaluation")


def make_settings(
    device: str,
    batch_size: int,
    num_workers: int | None,
    match_labels: LabelMatch,
    autocast: bool,
    progress: Progress | None,
    cancel: threading.Event | None = None,
) -> Settings:
    """Validate the arguments shared by every public entry point.

    Raises:
        RecipeError: a bad device, batch size, worker count or label matching mode.
    """
    from ..engine import resolve_device

    if batch_size < 1:
        raise RecipeError(f"batch size must be at least 1, got {batch_size}", field="batch_size")
    if num_workers is not None and num_workers < 0:
        raise RecipeError(f"num_workers must be 0 or more, got {num_workers}", field="num_workers")
    check_match_labels(match_labels)
    return Settings(resolve_device(device), batch_size, num_workers, match_labels, autocast, progress, cancel)


def check_match_labels(match_labels: str) -> None:
    if match_labels not in ("name", "position"):
        raise RecipeError(f"match_labels is 'name' or 'position', got {match_labels!r}", field="match_labels")


def check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and max_samples < 1:
        raise RecipeError(f"max samples must be at least 1, got {max_samples}", field="max_samples")


@contextlib.contextmanager
def progress_bars(console: Console | None) -> Iterator[Progress | None]:
    """Our progress display on ``console``: None when there is no console, it is quiet or no terminal.

    With a console, the libraries' own bars are off meanwhile (see ``_library_bars_off``): under a
    live display each would leave a blank line on a terminal, and ``--quiet`` promises none. Off a
    terminal (a log, CI) the display would draw nothing, being transient, and rich ends it with a blank line.
    """
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with _library_bars_off():
        if console.quiet or not console.is_interactive:
            yield None
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _counted(MofNCompleteColumn()),
            _counted(TimeRemainingColumn()),
            console=console,
            transient=True,
            speed_estimate_period=_ETA_WINDOW_S,
        ) as progress:
            yield progress


def _counted(column: ProgressColumn) -> ProgressColumn:
    """``column`` for the passes over a split; blank for a load, which has no count."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Counted(ProgressColumn):
        def render(self, task: Task) -> RenderableType:
            return column.render(task) if task.total is not None else Text("")

    return Counted()


@contextlib.contextmanager
def _activity(settings: Settings, what: str) -> Iterator[None]:
    """A line of our display while ``what`` runs: a load may be a download of minutes. ``on_progress`` hears of it
    as ``(what, 0, 0)``, or the web app would show the last pass's full bar (or the merge's) through it."""
    if settings.on_progress is not None:
        settings.on_progress(what, 0, 0)
    progress = settings.progress
    if progress is None:
        yield
        return
    line = progress.add_task(what, total=None)
    try:
        yield
    finally:
        progress.remove_task(line)


@contextlib.contextmanager
def _library_bars_off() -> Iterator[None]:
    """transformers, huggingface_hub and datasets draw bars of their own (one per model load, file
    download, dataset step); ours already say what is going on. Each library's setting comes back
    as it was once no thread evaluates (``setting_changed``); transformers' switch also turns
    huggingface_hub's off and on, so huggingface_hub's is saved first and restored last, and left off
    when transformers' come back on (see ``_transformers_bars_on``)."""
    import datasets
    from transformers.utils import logging as hf_logging

    from ..progress import hub_bars_off, quietly, setting_changed

    # the switches' warnings unshown (HF_HUB_DISABLE_PROGRESS_BARS set by the user has the last word)
    transformers = setting_changed("transformers bars", hf_logging.is_progress_bar_enabled,
                                   quietly(hf_logging.disable_progress_bar), _transformers_bars_on)
    datasets_bars = setting_changed("datasets bars", datasets.is_progress_bar_enabled,
                                    quietly(datasets.disable_progress_bars),
                                    _on_again(quietly(datasets.enable_progress_bars)))
    with hub_bars_off(), transformers, datasets_bars:
        yield


def _transformers_bars_on(was_on: bool) -> None:
    """transformers' bars back on (if they were), not huggingface_hub's with them: its switch turns both on,
    so the last evaluation out turned the Hub's bars on under another thread's merge or fetch, whose
    ``hub_bars_off`` holds them off (as this thread's does around this call); its last user restores them."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    from ..progress import quietly

    if was_on:
        quietly(hf_logging.enable_progress_bar)()
        quietly(hub_utils.disable_progress_bars)()


def _on_again(enable: Callable[[], None]) -> Callable[[bool], None]:
    """Bars that were on come back on; bars that were off are left alone."""
    return lambda was_on: enable() if was_on else None


# ---------------------------------------------------------------------------- models and processors


def location(ref: ModelRef) -> str | Path:
    """What the loaders take: a directory, or a repo id (its revision is passed on its own). The directory
    stays a Path: as a string, ``./merged`` is ``merged``, which the loaders ask the Hub for when missing."""
    return ref.path if ref.path is not None else str(ref.repo_id)


def _logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    return logits if logits is not None else output


def _labels_of(model: torch.nn.Module) -> dict[int, str]:
    from ..vision.loading import model_labels

    return {int(k): str(v) for k, v in model_labels(model).items()}


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _probe_images() -> list[PILImage]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1234)
    sizes = ((53, 37), (29, 71))  # odd sizes and both orientations: resizes and crops show
    return [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _processor_key(processor: Processor) -> str:
    """A fingerprint of what ``processor`` does, from its output on two fixed images.

    Jobs whose processors agree on it share one pass over the data (one decode per image), even
    when they come from different repos (fine-tunes usually carry their base's processor).
    """
    pixels = processor(_probe_images())
    digest = hashlib.sha256(str(tuple(pixels.shape)).encode())
    digest.update(pixels.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    """One report row on one task: how to load its model, and whose processor it uses."""

    row: str
    task: str
    load: Callable[[], torch.nn.Module]
    processor: ModelRef


# ---------------------------------------------------------------------------- batches


class _Collate:
    """Batch of dataset rows -> (pixel values, labels); runs in the DataLoader's workers."""

    def __init__(self, processor: Processor, image_column: str, label_column: str) -> None:
        self.processor = processor
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        images = [_to_rgb(row[self.image_column]) for row in rows]
        labels = torch.tensor([int(row[self.label_column]) for row in rows], dtype=torch.long)
        return self.processor(images), labels


def _to_rgb(value: Any) -> PILImage:
    """A PIL image, or an array (HWC or CHW, uint8 or floats in [0, 1]), as an RGB PIL image."""
    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.dtype != np.uint8:
        array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]  # only the channel: squeeze() took a 1-pixel side too (1x1 was an IndexError)
    return Image.fromarray(array).convert("RGB")


def _workers(settings: Settings, samples: int, collate: _Collate) -> int:
    if settings.num_workers is not None:
        wanted = settings.num_workers
    elif samples < _MIN_BATCHES_FOR_WORKERS * settings.batch_size:
        return 0
    else:
        wanted = min(4, os.cpu_count() or 1)
    if wanted and not _reaches_workers(collate):
        log.info("the processor cannot be sent to spawned DataLoader workers; preprocessing in this process")
        return 0
    return wanted


def _reaches_workers(collate: _Collate) -> bool:
    """Forked workers inherit the processor; spawned ones (macOS, Windows) need it picklable."""
    import multiprocessing
    import pickle

    if multiprocessing.get_start_method() == "fork":
        return True
    try:
        pickle.dumps(collate)
    except Exception:  # closures, lambdas, local classes: any pickling failure means "not across processes"
        return False
    return True


def _batches(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], data: TaskData, batch_size: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``loader``'s batches; an image that cannot be decoded (a corrupt or truncated file) is a
    :class:`~hubmerge.errors.DatasetError` naming the dataset, the example and its file, not PIL's error of no
    dataset (the CLI's "unexpected error", maybe hours into a split).

    Raises:
        DatasetError: an image of the split cannot be read.
    """
    from PIL import Image

    iterator = iter(loader)
    start = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (OSError, Image.DecompressionBombError) as exc:  # PIL's UnidentifiedImageError is an OSError
            culprit = _unreadable(data, start, min(start + batch_size, len(data)))
            if culprit is None:
                raise  # no image of the batch fails alone: not the data's fault (or not one we can open to tell)
            lines = str(exc).strip().splitlines()  # from a DataLoader worker: its traceback, PIL's words last
            raise DatasetError(
                str(data.ref),
                f"{culprit} cannot be read: {lines[-1] if lines else type(exc).__name__}. Replace or remove it "
                "(a file cut short by a failed download or copy reads so).",
            ) from None
        start += len(batch[1])
        yield batch


def _unreadable(data: TaskData, start: int, end: int) -> str | None:
    """Which of examples ``start`` to ``end - 1`` fails to decode, with its file where the split names one; None
    when none does."""
    import datasets

    rows = data.dataset
    if not isinstance(rows.features[data.image_column], datasets.Image):
        return None
    raw = rows.cast_column(data.image_column, datasets.Image(decode=False))[start:end][data.image_column]
    for index, image in enumerate(raw, start):
        if not _decodes(image):
            file = image.get("path")
            return f"example {index} of the {len(data)} evaluated" + (f" ({file})" if file else "")
    return None


def _decodes(image: Mapping[str, Any]) -> bool:
    """An undecoded ``Image()`` value (its bytes, or a local file) opens in PIL; a file that is missing does not,
    and one elsewhere (a URL, in an archive) is let be."""
    import io

    from PIL import Image

    path = image.get("path")
    if image.get("bytes") is not None:
        source: Any = io.BytesIO(image["bytes"])
    elif path and "://" not in path:
        source = path
    else:
        return True
    try:
        with Image.open(source) as opened:  # closed, unlike datasets' decode of a file it cannot read
            opened.load()
    except (OSError, Image.DecompressionBombError):
        return False
    return True


# ---------------------------------------------------------------------------- passes


@dataclass
class _Running:
    """One model's state during a pass."""

    row: str
    model: torch.nn.Module
    lookup: torch.Tensor | None
    head_size: int
    dtype: torch.dtype
    accuracy: Any
    loss: Any
    non_finite: int = 0  # examples whose logits hold a NaN or an infinity
    by_position: bool = False  # classes named otherwise by the dataset, matched by position as asked


def _prepare(data: TaskData, row: str, model: torch.nn.Module, settings: Settings) -> _Running:
    import torch

    from ..metrics import load_metric

    labels = _labels_of(model)
    head_size = len(labels)
    lookup = label_targets(data.task, data, labels, head_size, match=settings.match_labels)
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    model.eval().to(settings.device)
    return _Running(
        row=row,
        model=model,
        lookup=torch.from_numpy(lookup) if lookup is not None else None,
        head_size=head_size,
        dtype=floats[0] if floats else torch.float32,
        accuracy=load_metric("accuracy"),
        loss=load_metric("cross_entropy"),
        by_position=settings.match_labels == "position" and names_differ(data.class_names, labels, head_size),
    )


def run_pass(
    data: TaskData, models: Sequence[tuple[str, torch.nn.Module]], processor: Processor, settings: Settings
) -> dict[str, TaskResult]:
    """Evaluate ``models`` (rows of one task that share ``processor``) in one pass over ``data``.

    Returns:
        row -> result.

    Raises:
        HeadMismatchError: a head disagrees with the dataset's labels, or a model's logits with
            its own ``id2label``.
    """
    import torch

    started = time.perf_counter()
    settings.check_cancelled()
    running = [_prepare(data, row, model, settings) for row, model in models]
    cuda = settings.device.type == "cuda"
    collate = _Collate(processor, data.image_column, data.label_column)
    loader = torch.utils.data.DataLoader(
        data.dataset,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=_workers(settings, len(data), collate),
        collate_fn=collate,
        pin_memory=cuda,
    )
    progress = settings.progress
    rows = ", ".join(r.row for r in running)
    what = f"evaluating {data.task} ({rows})"  # the pass, as on_progress hears of it
    bar = None
    if progress is not None:
        bar = progress.add_task(f"[bold]evaluating[/bold] {data.task} [dim]({rows})[/dim]", total=len(data))
    done = 0
    if settings.on_progress is not None:
        settings.on_progress(what, done, len(data))
    use_autocast = cuda and settings.autocast
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for pixels, labels in _batches(loader, data, settings.batch_size):
            pixels = pixels.to(settings.device, non_blocking=True)
            for r in running:
                settings.check_cancelled()  # a batch through several big models on a CPU takes minutes
                logits = _logits(r.model(pixels.to(r.dtype))).float()
                if logits.shape[-1] != r.head_size:
                    raise HeadMismatchError(
                        data.task,
                        f"{r.row}: the model gives {logits.shape[-1]} logits but its id2label has "
                        f"{r.head_size} labels; its config does not describe its head",
                    )
                targets = (r.lookup[labels] if r.lookup is not None else labels).numpy()
                logits_cpu = logits.cpu()
                finite = torch.isfinite(logits_cpu).all(dim=-1)
                r.non_finite += int((~finite).sum())
                # argmax takes a NaN for the largest logit: such an example would count as right for its class
                predictions = torch.where(finite, logits_cpu.argmax(dim=-1), -1)
                r.accuracy.add_batch(predictions=predictions.numpy(), references=targets)
                r.loss.add_batch(predictions=logits_cpu.numpy(), references=targets)
            done += len(labels)
            if bar is not None and progress is not None:
                progress.advance(bar, len(labels))
            if settings.on_progress is not None:
                settings.on_progress(what, done, len(data))
    if bar is not None and progress is not None:
        progress.remove_task(bar)
    seconds = time.perf_counter() - started
    return {
        r.row: TaskResult(
            accuracy=float(r.accuracy.compute()["accuracy"]),
            loss=float(r.loss.compute()["cross_entropy"]),
            num_samples=len(data),
            dataset=str(data.ref),
            seconds=seconds,
            split_size=data.total,
            non_finite=r.non_finite,
            by_position=r.by_position,
            label_column=data.ref.label_column,
            image_column=data.ref.image_column,
        )
        for r in running
    }


def run_jobs(
    jobs: Sequence[Job],
    datasets: Mapping[str, DatasetRef],
    *,
    settings: Settings,
    max_samples: int | None,
    token: str | None,
) -> dict[str, dict[str, TaskResult]]:
    """row -> task -> result for every job: one data load per task, one pass per processor group.

    Raises:
        DatasetError, HeadMismatchError: see :func:`~hubmerge.evaluation.evaluate_classifier`.
    """
    import torch

    from ..vision.processors import load_processor

    processors: dict[ModelRef, tuple[Processor, str]] = {}

    def processor_for(ref: ModelRef) -> tuple[Processor, str]:
        if ref not in processors:
            with _activity(settings, f"loading the image processor of {ref}"):
                processor = load_processor(location(ref), stage="test", revision=ref.revision, token=token)
            processors[ref] = (processor, _processor_key(processor))
        return processors[ref]

    results: dict[str, dict[str, TaskResult]] = {}
    for task, ref in datasets.items():
        task_jobs = [job for job in jobs if job.task == task]
        if not task_jobs:
            continue
        with _activity(settings, f"loading {task}'s dataset {ref}"):
            data = load_task_data(task, ref, max_samples=max_samples, token=token)
        groups: dict[str, list[Job]] = {}
        for job in task_jobs:
            groups.setdefault(processor_for(job.processor)[1], []).append(job)
        for group in groups.values():
            processor = processor_for(group[0].processor)[0]
            pending = list(group)
            while pending:
                loaded: list[tuple[str, torch.nn.Module]] = []
                budget = 0
                while pending and (not loaded or budget < _PASS_PARAMETER_BYTES):
                    settings.check_cancelled()  # each load may be a download of a model from the Hub
                    job = pending.pop(0)
                    with _library_bars_off(), _activity(settings, f"loading {job.row} for {task}"):
                        model = job.load()
                    budget += _parameter_bytes(model)
                    loaded.append((job.row, model))
                for row, result in run_pass(data, loaded, processor, settings).items():
                    results.setdefault(row, {})[task] = result
                del loaded
                if settings.device.type == "cuda":
                    torch.cuda.empty_cache()
    return results
