"""Tiny, real, *trained* image classifiers for the tests and the demo (no download, no network).

The data is scikit-learn's ``load_digits()`` (1,797 grayscale 8x8 digits, shipped with
scikit-learn), turned into 32x32 RGB images. A "pretrained" base model learns all ten digits; it is
then fine-tuned into four tasks with different label sets and head sizes, each with a fresh head:

    ============== ===================================================== =======
    task           images                                                classes
    ============== ===================================================== =======
    digits_low     upright digits 0-4                                    5
    digits_high    upright digits 5-9                                    5
    digits_parity  upright digits, even or odd                           2
    digits_rotated all digits rotated by 90 degrees (counter-clockwise)  10
    ============== ===================================================== =======

The fine-tunes move the backbone far enough that merging them is measurable (their simple average
beats both the base backbone and any single fine-tune's backbone on the four tasks) while staying in
the base's basin (task arithmetic with a small scaling factor beats a large one); the fixture tests
assert this. Two families share that recipe: a tiny ``ConvNextForImageClassification`` (the key
names and code paths of ``facebook/convnext-base-224``) and a tiny transformers
``ResNetForImageClassification``.

Every model is written like a Hub repo (``config.json`` with ``id2label``, ``model.safetensors``,
``preprocessor_config.json``, ``README.md``), every task's data as a ``datasets.DatasetDict``
(``image``: ``Image()``, ``label``: ``ClassLabel``; ``train``/``test``) with ``save_to_disk``. A build
is deterministic, takes seconds on two CPU cores, is cached under a key that changes with this
file's source and the library versions, and appears atomically (built in a temporary directory,
then renamed), so parallel test workers and interrupted builds never see half a fixture.

Example:
    >>> from hubmerge.fixtures import accuracy, build_fixtures
    >>> fx = build_fixtures(family="convnext")
    >>> sorted(fx.models)
    ['digits_high', 'digits_low', 'digits_parity', 'digits_rotated']
    >>> accuracy(fx.models["digits_low"], fx.datasets["digits_low"]) > 0.9
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from .errors import DatasetError, HeadMismatchError, UnsupportedArchitectureError
from .vision.classnames import class_names

if TYPE_CHECKING:
    import datasets
    import torch
    from PIL.Image import Image as PILImage
    from transformers import ConvNextImageProcessor, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor

__all__ = [
    "BASE_TASK",
    "FAMILIES",
    "IMAGE_SIZE",
    "TASKS",
    "EncodedSplit",
    "Family",
    "FixtureSet",
    "accuracy",
    "build_fixtures",
    "default_cache_dir",
    "load_split",
    "make_processor",
]

Family = Literal["convnext", "resnet"]
FAMILIES: tuple[Family, ...] = get_args(Family)

#: The task the "pretrained" base model is trained on (all ten digits).
BASE_TASK = "digits"
#: The fine-tuned tasks, in the order their models are listed.
TASKS: tuple[str, ...] = ("digits_low", "digits_high", "digits_parity", "digits_rotated")
#: Height and width of every fixture image and of the models' input.
IMAGE_SIZE = 32

_MANIFEST = "fixture.json"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------- the recipe
# Measured on 2 CPU cores (~13 s ConvNeXt, ~7 s ResNet): the base reaches ~97% on the ten digits and
# each fine-tune 92-100% on its own task, and the merge margins asserted in tests/test_fixtures.py
# hold for this recipe under several other seeds as well. The class names of every task live in
# hubmerge.vision.classnames (built-in entries), so that the configs and datasets agree.

_SPLIT_SEED = 0
_TEST_FRACTION = 0.25
_BATCH_SIZE = 64
_THREADS = 2  # fixed, so that the same machine gives the same bits whatever its core count


@dataclass(frozen=True)
class _Stage:
    epochs: int
    lr: float  # peak of a one-cycle schedule (Adam)
    seed: int


_BASE_STAGE = _Stage(epochs=6, lr=3e-3, seed=0)
_FINETUNE_STAGE = _Stage(epochs=4, lr=1e-3, seed=100)  # task i uses seed + i


@dataclass(frozen=True)
class _TaskSpec:
    keep: Callable[[np.ndarray], np.ndarray]  # digit -> bool: which images the task uses
    label: Callable[[np.ndarray], np.ndarray]  # digit -> the task's label index
    quarter_turns: int  # counter-clockwise rotation of the image
    description: str


_TASK_SPECS: dict[str, _TaskSpec] = {
    BASE_TASK: _TaskSpec(lambda d: d >= 0, lambda d: d, 0, "all ten handwritten digits"),
    "digits_low": _TaskSpec(lambda d: d < 5, lambda d: d, 0, "handwritten digits 0-4"),
    "digits_high": _TaskSpec(lambda d: d >= 5, lambda d: d - 5, 0, "handwritten digits 5-9"),
    "digits_parity": _TaskSpec(lambda d: d >= 0, lambda d: d % 2, 0, "handwritten digits: even or odd"),
    "digits_rotated": _TaskSpec(
        lambda d: d >= 0, lambda d: d, 1, "handwritten digits rotated by 90 degrees counter-clockwise"
    ),
}


def _family_config(family: Family, task: str) -> Any:
    from transformers import ConvNextConfig, ResNetConfig

    names = class_names(task)
    labels: dict[str, Any] = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }
    if family == "convnext":
        return ConvNextConfig(
            num_channels=3, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], image_size=IMAGE_SIZE,
            patch_size=2, **labels,
        )
    return ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
        layer_type="basic", **labels,
    )


def _backbone_prefix(family: Family) -> str:
    return "convnext" if family == "convnext" else "resnet"


# ---------------------------------------------------------------- public types


@dataclass(frozen=True)
class FixtureSet:
    """One family's fixture: a base model, its fine-tunes and their datasets, all on disk.

    Attributes:
        family: ``"convnext"`` or ``"resnet"``.
        root: the cache directory holding everything below.
        base: model directory of the "pretrained" base (task ``BASE_TASK``, labels ``"0"``..``"9"``).
        models: task -> model directory of the fine-tune for that task (``TASKS`` order).
        datasets: task -> ``save_to_disk`` directory of a ``DatasetDict`` with ``train`` and ``test``.
        base_dataset: ``save_to_disk`` directory of the base task's data.
        tasks: the fine-tuned tasks, in order.
        backbone: the tensor-name prefix of the shared backbone (``"convnext"`` / ``"resnet"``), i.e.
            the recipe's ``target_modules``; everything else (``classifier.*``) is the task's head.
        accuracy: test accuracy measured at build time: each fine-tune on its own task, and the base
            on ``BASE_TASK``.
        build_seconds: how long the original (uncached) build took.
    """

    family: Family
    root: Path
    base: Path
    models: dict[str, Path]
    datasets: dict[str, Path]
    base_dataset: Path
    tasks: tuple[str, ...]
    backbone: str
    accuracy: dict[str, float]
    build_seconds: float


@dataclass(frozen=True)
class EncodedSplit:
    """A dataset split turned into model inputs, for a plain torch evaluation loop.

    Attributes:
        pixel_values: float tensor ``(N, 3, IMAGE_SIZE, IMAGE_SIZE)``, as the processor makes it.
        labels: int64 tensor ``(N,)``.
        names: the split's class names (its ``ClassLabel`` names), in label order.
    """

    pixel_values: torch.Tensor
    labels: torch.Tensor
    names: tuple[str, ...]


# ---------------------------------------------------------------- public functions


def default_cache_dir() -> Path:
    """Where fixtures are cached: ``$HUBMERGE_CACHE/fixtures``, else ``~/.cache/hubmerge/fixtures``.

    ``XDG_CACHE_HOME`` replaces ``~/.cache`` when it is set.
    """
    root = os.environ.get("HUBMERGE_CACHE")
    if root:
        return Path(root).expanduser() / "fixtures"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hubmerge" / "fixtures"


def make_processor() -> ConvNextImageProcessor:
    """The image processor of every fixture model: 32x32 in, ImageNet mean/std normalisation.

    ``crop_pct=1.0`` makes ConvNeXt's resize-then-center-crop keep the whole 32x32 image.
    ``facebook/convnext-base-224`` and ``microsoft/resnet-50`` use the same processor class.
    """
    from transformers import ConvNextImageProcessor

    return ConvNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_pct=1.0,
        image_mean=list(_IMAGENET_MEAN),
        image_std=list(_IMAGENET_STD),
    )


def build_fixtures(cache_dir: str | Path | None = None, *, family: Family = "convnext") -> FixtureSet:
    """Build (once) and return the tiny trained models and datasets of one family.

    The first call for a family trains and writes everything (seconds on two CPU cores); later
    calls, from any process, find the cached result and return at once. The cache key changes with
    this module's source and the torch / transformers / datasets versions, so a stale fixture is
    never reused. The build runs in a temporary directory that is renamed into place when complete;
    concurrent callers wait on a lock file instead of building twice.

    Args:
        cache_dir: the directory holding fixtures; default :func:`default_cache_dir`.
        family: ``"convnext"`` (tiny ``ConvNextForImageClassification``) or ``"resnet"`` (tiny
            transformers ``ResNetForImageClassification``).

    Returns:
        The :class:`FixtureSet` with the paths of the base model, the fine-tunes and the datasets.

    Raises:
        UnsupportedArchitectureError: ``family`` is not one of ``FAMILIES``.
        OSError: the cache directory cannot be written.

    Example:
        >>> fx = build_fixtures(family="resnet")
        >>> fx.backbone, fx.tasks[0]
        ('resnet', 'digits_low')
    """
    if family not in FAMILIES:
        raise UnsupportedArchitectureError(f"fixture family '{family}'", FAMILIES)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = _cache_key(family)
    final = cache / f"{family}-{key}"
    if (final / _MANIFEST).is_file():
        return _load(final)
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f".{family}-{key}.lock"):
        if (final / _MANIFEST).is_file():  # another process built it while we waited
            return _load(final)
        if final.exists():  # not ours: an incomplete directory made by hand; rebuild it
            shutil.rmtree(final)
        for stale in cache.glob(f".tmp-{family}-{key}-*"):  # left by an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache / f".tmp-{family}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _build(tmp, family=family, key=key)
            try:
                tmp.rename(final)
            except OSError:
                if not (final / _MANIFEST).is_file():  # not a lost race (no lock on this platform)
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _load(final)


def load_split(
    dataset: str | Path | datasets.Dataset | datasets.DatasetDict,
    *,
    split: str = "test",
    processor: BaseImageProcessor | None = None,
) -> EncodedSplit:
    """Load one split of an image-classification dataset and encode it with ``processor``.

    Args:
        dataset: a ``save_to_disk`` directory, a ``DatasetDict`` or a ``Dataset``, with an ``image``
            column and a ``ClassLabel`` column ``label``.
        split: the split to use when ``dataset`` holds several.
        processor: the image processor; default :func:`make_processor`.

    Returns:
        The split's pixel values, labels and class names.

    Raises:
        DatasetError: the split or the columns are missing, or ``label`` is not a ``ClassLabel``.
    """
    import datasets as hf_datasets
    import torch

    where = str(dataset) if isinstance(dataset, (str, Path)) else "dataset"
    data = hf_datasets.load_from_disk(str(dataset)) if isinstance(dataset, (str, Path)) else dataset
    if isinstance(data, hf_datasets.DatasetDict):
        if split not in data:
            raise DatasetError(where, f"has no split '{split}' (splits: {', '.join(data)})")
        data = data[split]
    missing = [column for column in ("image", "label") if column not in data.column_names]
    if missing:
        raise DatasetError(where, f"needs the columns 'image' and 'label'; missing {missing}")
    feature = data.features["label"]
    if not isinstance(feature, hf_datasets.ClassLabel):
        raise DatasetError(where, f"column 'label' must be a ClassLabel, not {type(feature).__name__}")
    processor = processor if processor is not None else make_processor()
    images = [image.convert("RGB") for image in data["image"]]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    labels = torch.tensor(data["label"], dtype=torch.long)
    return EncodedSplit(pixel_values=pixel_values, labels=labels, names=tuple(feature.names))


def accuracy(
    model: str | Path | torch.nn.Module,
    data: str | Path | datasets.Dataset | datasets.DatasetDict | EncodedSplit,
    *,
    split: str = "test",
    processor: BaseImageProcessor | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of a classifier on a dataset split, with a plain torch loop (no ``evaluate``).

    Args:
        model: a model directory (loaded with ``AutoModelForImageClassification``) or a module whose
            output has ``.logits`` (or is the logits tensor).
        data: a dataset (see :func:`load_split`) or an already encoded split.
        split: the split to evaluate when ``data`` holds several.
        processor: the image processor; default: the model directory's own, else
            :func:`make_processor`. Ignored when ``data`` is an :class:`EncodedSplit`.
        batch_size: images per forward pass.

    Returns:
        The fraction of correctly classified images, in [0, 1].

    Raises:
        HeadMismatchError: the model's head does not have one output per class of the data.
        DatasetError: the dataset cannot be used (see :func:`load_split`).

    Example:
        >>> fx = build_fixtures()
        >>> round(accuracy(fx.base, fx.base_dataset), 2) >= 0.9
        True
    """
    import torch

    if isinstance(model, (str, Path)):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if processor is None and not isinstance(data, EncodedSplit):
            processor = AutoImageProcessor.from_pretrained(str(model))
        model = AutoModelForImageClassification.from_pretrained(str(model))
    where = Path(str(data)).name if isinstance(data, (str, Path)) else "data"
    encoded = data if isinstance(data, EncodedSplit) else load_split(data, split=split, processor=processor)
    if len(encoded.labels) == 0:
        raise DatasetError("dataset", f"split '{split}' is empty")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded.labels), batch_size):
                output = model(pixel_values=encoded.pixel_values[start : start + batch_size])
                logits = output.logits if hasattr(output, "logits") else output
                if logits.shape[-1] != len(encoded.names):
                    raise HeadMismatchError(
                        where,
                        f"the model has {logits.shape[-1]} outputs but the data has {len(encoded.names)} "
                        f"classes ({', '.join(encoded.names[:10])}). Use the head made for this task.",
                    )
                predictions = logits.argmax(dim=-1)
                correct += int((predictions == encoded.labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(encoded.labels)


# ---------------------------------------------------------------- cache


def _cache_key(family: Family) -> str:
    import datasets as hf_datasets
    import torch
    import transformers

    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    facts = {
        "family": family,
        "labels": {task: class_names(task) for task in (BASE_TASK, *TASKS)},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": hf_datasets.__version__,
    }
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (and threads); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps readers safe
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _load(root: Path) -> FixtureSet:
    manifest = json.loads((root / _MANIFEST).read_text())
    tasks = tuple(manifest["tasks"])
    return FixtureSet(
        family=manifest["family"],
        root=root,
        base=root / "models" / manifest["base_task"],
        models={task: root / "models" / task for task in tasks},
        datasets={task: root / "datasets" / task for task in tasks},
        base_dataset=root / "datasets" / manifest["base_task"],
        tasks=tasks,
        backbone=manifest["backbone"],
        accuracy={task: float(value) for task, value in manifest["accuracy"].items()},
        build_seconds=float(manifest["build_seconds"]),
    )


# ---------------------------------------------------------------- build


@contextlib.contextmanager
def _reproducible(threads: int) -> Iterator[None]:
    """Fixed threads, deterministic kernels and a private RNG state; the caller's are restored."""
    import torch

    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn_only)
        torch.set_num_threads(old_threads)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or info logs from transformers / datasets while building; restored after."""
    import datasets as hf_datasets
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    transformers_bars = hf_logging.is_progress_bar_enabled()
    datasets_bars = not hf_datasets.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf_datasets.disable_progress_bars()
    try:
        yield
    finally:
        if datasets_bars:
            hf_datasets.enable_progress_bars()
        if transformers_bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as uint8 images (0 = background) and their digit labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def _to_pil(image: np.ndarray, quarter_turns: int) -> PILImage:
    from PIL import Image

    turned = np.ascontiguousarray(np.rot90(image, quarter_turns))
    small = Image.fromarray(turned)  # uint8, 2-D: mode "L"
    return small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR).convert("RGB")


@dataclass
class _TaskData:
    task: str
    train_images: list[PILImage]
    train_labels: np.ndarray
    test_images: list[PILImage]
    test_labels: np.ndarray


def _task_data(task: str, images: np.ndarray, digits: np.ndarray, test_mask: np.ndarray) -> _TaskData:
    spec = _TASK_SPECS[task]
    keep = spec.keep(digits)
    labels = spec.label(digits)
    parts: dict[bool, tuple[list[PILImage], np.ndarray]] = {}
    for is_test in (False, True):
        chosen = np.flatnonzero(keep & (test_mask == is_test))
        parts[is_test] = ([_to_pil(images[i], spec.quarter_turns) for i in chosen], labels[chosen])
    return _TaskData(task, parts[False][0], parts[False][1], parts[True][0], parts[True][1])


def _save_dataset(path: Path, task: str, data: _TaskData) -> None:
    import datasets as hf_datasets

    features = hf_datasets.Features(
        {"image": hf_datasets.Image(), "label": hf_datasets.ClassLabel(names=class_names(task))}
    )
    splits = {
        "train": (data.train_images, data.train_labels),
        "test": (data.test_images, data.test_labels),
    }
    dataset = hf_datasets.DatasetDict(
        {
            name: hf_datasets.Dataset.from_dict(
                {"image": images, "label": [int(v) for v in labels]}, features=features, split=name
            )
            for name, (images, labels) in splits.items()
        }
    )
    dataset.save_to_disk(str(path))


def _train(
    model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, stage: _Stage, seed: int
) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=stage.lr)
    steps_per_epoch = -(-len(labels) // _BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=stage.lr, total_steps=stage.epochs * steps_per_epoch, pct_start=0.2
    )
    model.train()
    for _ in range(stage.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), _BATCH_SIZE):
            batch = order[start : start + _BATCH_SIZE]
            logits = model(pixel_values=pixels[batch]).logits
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def _save_model(
    path: Path, model: PreTrainedModel, processor: BaseImageProcessor, *, task: str, family: Family,
    test_accuracy: float, base_task: str | None,
) -> None:
    kwargs: dict[str, Any] = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
    model.save_pretrained(str(path), **kwargs)
    processor.save_pretrained(str(path))
    names = class_names(task)
    origin = (
        f"Fine-tuned from the `{base_task}` base model of the same family, "
        f"with a new {len(names)}-class head."
        if base_task
        else "The \"pretrained\" base that the task fine-tunes start from."
    )
    architecture = type(model).__name__
    (path / "README.md").write_text(
        "---\n"
        "library_name: transformers\n"
        "pipeline_tag: image-classification\n"
        "license: apache-2.0\n"
        "tags:\n- hubmerge-fixture\n- image-classification\n"
        "---\n\n"
        f"# hubmerge fixture: {family} / {task}\n\n"
        f"A tiny `{architecture}` trained by `hubmerge.fixtures` on scikit-learn's 8x8 digits "
        f"(upscaled to {IMAGE_SIZE}x{IMAGE_SIZE} RGB): {_TASK_SPECS[task].description}. {origin}\n\n"
        f"- labels ({len(names)}): {', '.join(names)}\n"
        f"- test accuracy: {test_accuracy:.4f}\n\n"
        "For tests and demos only: it shows that merging works, not how well a real model does.\n"
    )


def _build(root: Path, *, family: Family, key: str) -> None:
    """Train and write one family's fixture into ``root`` (a fresh directory)."""
    import torch
    from transformers import AutoImageProcessor, ConvNextForImageClassification, ResNetForImageClassification
    started = time.perf_counter()
    model_class = ConvNextForImageClassification if family == "convnext" else ResNetForImageClassification
    prefix = _backbone_prefix(family) + "."
    root.mkdir(parents=True)
    images, digits = _digit_images()
    test_mask = np.zeros(len(digits), dtype=bool)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits))
    test_mask[order[: int(len(digits) * _TEST_FRACTION)]] = True

    # The processor as a user would load it from a model directory, so that training sees exactly
    # what evaluation will.
    make_processor().save_pretrained(str(root / "processor"))
    processor = AutoImageProcessor.from_pretrained(str(root / "processor"))
    shutil.rmtree(root / "processor")

    def encode(task_images: list[PILImage], labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = processor(images=task_images, return_tensors="pt")["pixel_values"]
        return pixels, torch.as_tensor(labels, dtype=torch.long)

    def test_accuracy(model: torch.nn.Module, data: _TaskData) -> float:
        pixels, labels = encode(data.test_images, data.test_labels)
        return accuracy(model, EncodedSplit(pixels, labels, tuple(class_names(data.task))))

    scores: dict[str, float] = {}
    with _quiet(), _reproducible(_THREADS):
        base_data = _task_data(BASE_TASK, images, digits, test_mask)
        torch.manual_seed(_BASE_STAGE.seed)
        base = model_class(_family_config(family, BASE_TASK))
        _train(base, *encode(base_data.train_images, base_data.train_labels), _BASE_STAGE, _BASE_STAGE.seed)
        scores[BASE_TASK] = test_accuracy(base, base_data)
        _save_dataset(root / "datasets" / BASE_TASK, BASE_TASK, base_data)
        _save_model(root / "models" / BASE_TASK, base, processor, task=BASE_TASK, family=family,
                    test_accuracy=scores[BASE_TASK], base_task=None)
        backbone = {name: value for name, value in base.state_dict().items() if name.startswith(prefix)}

        for index, task in enumerate(TASKS):
            data = _task_data(task, images, digits, test_mask)
            seed = _FINETUNE_STAGE.seed + index
            torch.manual_seed(seed)  # the new head's initialisation
            model = model_class(_family_config(family, task))
            missing, unexpected = model.load_state_dict(backbone, strict=False)
            if unexpected or any(name.startswith(prefix) for name in missing):
                raise RuntimeError(f"fixture {family}/{task}: the base backbone does not fit ({unexpected})")
            _train(model, *encode(data.train_images, data.train_labels), _FINETUNE_STAGE, seed)
            scores[task] = test_accuracy(model, data)
            _save_dataset(root / "datasets" / task, task, data)
            _save_model(root / "models" / task, model, processor, task=task, family=family,
                        test_accuracy=scores[task], base_task=BASE_TASK)

    manifest = {
        "family": family,
        "key": key,
        "base_task": BASE_TASK,
        "tasks": list(TASKS),
        "backbone": _backbone_prefix(family),
        "accuracy": scores,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    # Written last: its presence marks a complete build.
    (root / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
