"""Evaluation data: load a task's split, find its image and label columns, map its labels onto a head.

Internal to :mod:`hubmerge.evaluation`. Everything here fails with a typed error that names
the dataset or task at fault and says what to do:

- a dataset is a local ``save_to_disk`` directory (``datasets.load_from_disk``), another local
  directory of data files, or a Hub dataset id (``datasets.load_dataset``, which honours
  ``HF_ENDPOINT`` and the offline variables) -> :class:`~hubmerge.errors.DatasetError`;
- the image column is the one the dataset's ``image_column`` names, else the first ``Image()`` feature (else a
  column named image / img / pixel_values; its PNG / JPEG bytes or files decoded as images), the label column the
  one its ``label_column`` names, else the first ``ClassLabel`` (else label / labels / fine_label);
- a dataset's class names are matched onto the head's ``id2label`` by name (case, spaces, ``_`` and
  ``-`` ignored), so a dataset whose class order differs from the head's is remapped, not misread
  -> :class:`~hubmerge.errors.HeadMismatchError` when they cannot be matched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DatasetError, HeadMismatchError, UnknownTaskError

if TYPE_CHECKING:
    import datasets
    import numpy as np

    from ..recipe import DatasetRef

__all__ = ["LabelMatch", "TaskData", "check_column", "check_head_labels", "check_hub_datasets", "label_class_names",
           "label_targets", "load_task_data", "local_dataset_dir", "resolve_dataset_path"]

log = logging.getLogger(__name__)

LabelMatch = Literal["name", "position"]

_IMAGE_FALLBACKS = ("image", "img", "pixel_values")
_LABEL_FALLBACKS = ("label", "labels", "fine_label")
_ENCODED = ("binary", "large_binary", "string", "large_string")  # a Value of images' bytes, paths or URLs
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")
_SEPARATORS = re.compile(r"[\s_\-]+")
_GENERIC_LABEL = re.compile(r"^label_?\d+$", re.IGNORECASE)
_SUBSET_SEED = 0
_UNDERSHOOT = 0.25  # the most, as a share of its top, an image's floats go below 0 (a resampling's ringing)


@dataclass(frozen=True)
class TaskData:
    """One task's evaluation split, ready to iterate.

    Attributes:
        task: the task it is evaluated for.
        ref: where it came from.
        dataset: the split, reduced to its image and label columns (and to ``max_samples`` rows).
        image_column: the column holding the images.
        label_column: the column holding integer labels.
        class_names: the label column's ``ClassLabel`` names, or None for plain integer labels.
        total: the size of the split before ``max_samples``.
    """

    task: str
    ref: DatasetRef
    dataset: datasets.Dataset
    image_column: str
    label_column: str
    class_names: tuple[str, ...] | None
    total: int

    def __len__(self) -> int:
        return len(self.dataset)

    def labels(self) -> np.ndarray:
        """Every label of the (reduced) split, as an int64 array."""
        import numpy as np

        return np.asarray(self.dataset.with_format("numpy")[self.label_column], dtype=np.int64)


# ---------------------------------------------------------------------------- loading


def resolve_dataset_path(ref: DatasetRef) -> Path | None:
    """The local directory ``ref`` names, or None when it is not local (a Hub dataset id)."""
    return Path(ref.path).expanduser() if ref.is_local else None


def local_dataset_dir(ref: DatasetRef, *, task: str | None = None) -> Path | None:
    """``resolve_dataset_path``, once the folder is there: what the plan's head check and the evaluation both
    refuse, in one message (a typo in a path said 'is not a directory', as if a file were in the way).

    Raises:
        DatasetError: ``ref`` names a local folder that does not exist, or a file.
    """
    local = resolve_dataset_path(ref)
    if local is None or local.is_dir():
        return local
    what = "is a file, not a folder" if local.exists() else "does not exist"
    raise DatasetError(
        str(ref),
        f"'{ref.path}' {what}. Give a directory written by Dataset.save_to_disk, a directory of data files, "
        "or a Hub dataset id like 'org/name'." + _registry_hint(ref.path, task),
    )


def check_hub_datasets(datasets_by_task: Mapping[str, DatasetRef], *, token: str | None
                       ) -> dict[str, tuple[str, ...]]:
    """Refuse a Hub dataset id that does not exist, or a split it does not have, before a merge that is to
    be evaluated on it runs (minutes, for real models) only to fail at the evaluation. Offline, or when the
    Hub does not answer, nothing is refused here: the evaluation says what it finds.

    Returns:
        Each task's class names where its Hub dataset's card lists them (a ``ClassLabel``), read without
        loading the data, for :func:`check_head_labels` once the heads are planned.

    Raises:
        DatasetError: the Hub has no such dataset (or it is private and ``token`` cannot read it), the
            dataset holds no data files, or it has no such split.
    """
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub import errors as hf

    class_names: dict[str, tuple[str, ...]] = {}
    if constants.is_offline_mode():
        return class_names
    api = HfApi(token=token, library_name="hubmerge")
    for task, ref in datasets_by_task.items():
        if resolve_dataset_path(ref) is not None:
            continue
        try:
            api.dataset_info(ref.path)
        except hf.GatedRepoError:
            continue  # it exists; whether the token may read it, the evaluation finds out
        except hf.RepositoryNotFoundError:
            raise DatasetError(
                str(ref), "is not on the Hub (or is private, and the token cannot read it)."
                + _registry_hint(ref.path, task),
            ) from None
        except (hf.HfHubHTTPError, httpx2.TransportError, ValueError):
            continue  # rate limited, unreachable, an id the Hub API will not take: no reason to refuse
        info = _hub_info(ref, token)  # from the dataset's card and file listing, no data read
        if info is None:
            continue
        if info.splits and ref.split not in info.splits:
            raise DatasetError(str(ref), ref.missing_split(list(info.splits), task=task))
        if names := label_class_names(info.features, ref.label_column):
            class_names[task] = names
    return class_names


def _hub_info(ref: DatasetRef, token: str | None) -> datasets.DatasetInfo | None:
    """A Hub dataset's (or a local folder of data files') splits and (where its card lists them) features, or
    None when they cannot be told without loading it (a config that must be named, a Hub that does not answer).

    Raises:
        DatasetError: the dataset's repo holds no data files; no evaluation can load it.
    """
    import datasets as hf_datasets
    import httpx2
    from datasets.data_files import EmptyDatasetError
    from huggingface_hub import errors as hf

    try:
        return hf_datasets.get_dataset_config_info(ref.path, ref.name, token=token)
    except EmptyDatasetError as exc:  # a FileNotFoundError, but the repo is there: say what it lacks
        raise DatasetError(str(ref), _no_data_files(exc)) from None
    except (ValueError, OSError, hf_datasets.exceptions.DatasetsError, hf.HfHubHTTPError, httpx2.TransportError):
        return None


def _no_data_files(exc: Exception) -> str:
    return (f"holds no data files ({exc}), so there is nothing to evaluate on: add its data (an upload that "
            "failed half-way leaves such a Hub repo), or name another dataset.")


def label_class_names(features: datasets.Features | None, label_column: str | None) -> tuple[str, ...] | None:
    """The names of the ``ClassLabel`` the evaluation reads labels from: the named column's, else the first;
    None where that column is no ``ClassLabel`` (plain integers) or there is none."""
    import datasets as hf_datasets

    found = (features or {}).get(label_column) if label_column is not None else next(
        (f for f in (features or {}).values() if isinstance(f, hf_datasets.ClassLabel)), None)
    return tuple(found.names) if isinstance(found, hf_datasets.ClassLabel) else None


def _registry_hint(*names: str | None) -> str:
    """'Did you mean the registry dataset X?' for the first name that is a known task."""
    from ..recipe import DatasetRef
    from ..vision.classnames import canonical_task, dataset_for

    for name in names:
        if not name:
            continue
        try:
            task = canonical_task(name.rsplit("/", 1)[-1])
        except UnknownTaskError:
            continue
        spec = dataset_for(task)
        if spec is None:
            continue
        config = f" (config '{spec.config}')" if spec.config else ""
        spelled = DatasetRef(spec.repo_id, spec.config, spec.split).spec
        return (
            f" '{task}' is usually evaluated on the Hub dataset '{spec.repo_id}'{config}, split "
            f"'{spec.split}': 'dataset: {spelled}' in a recipe, --task {task}={spelled} for `hubmerge evaluate`."
        )
    return ""


def _load_split(ref: DatasetRef, *, task: str, token: str | None) -> datasets.Dataset:
    import datasets as hf_datasets
    from datasets.data_files import EmptyDatasetError

    where = str(ref)
    local = local_dataset_dir(ref, task=task)
    saved = local is not None and any((local / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS)
    files = replace(ref, path=str(local)) if local is not None else ref  # what load_dataset reads
    try:
        if saved:
            data: Any = hf_datasets.load_from_disk(str(local))
        else:
            data = hf_datasets.load_dataset(files.path, ref.name, split=ref.split, token=token)
    except ConnectionError as exc:
        raise DatasetError(
            where,
            f"is not a local directory and could not be loaded from the Hub ({exc}). Check the id and "
            "your connection (HF_ENDPOINT, HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are honoured; offline, "
            "only datasets already in the cache load)." + _registry_hint(ref.path, task),
        ) from None
    except EmptyDatasetError as exc:  # there, but with nothing to load: not "not found"
        raise DatasetError(where, _no_data_files(exc)) from None
    except FileNotFoundError as exc:  # DatasetNotFoundError, DataFilesNotFoundError, missing files
        raise DatasetError(
            where,
            f"was not found ({exc}). Give a save_to_disk directory or a Hub dataset id."
            + _registry_hint(ref.path, task),
        ) from None
    except IndexError as exc:  # load_from_disk of a split saved with no rows (save_to_disk wrote no shard)
        raise DatasetError(
            where, f"cannot be loaded: datasets' load_from_disk failed with IndexError: {exc}, as it does on a split "
            "saved with no rows; save the split with its examples"
        ) from None
    except (ValueError, OSError, hf_datasets.exceptions.DatasetsError) as exc:  # bad split / config names
        info = None if saved else _hub_info(files, token)  # a folder of data files, as a Hub repo
        if info is not None and info.splits and ref.split not in info.splits:  # name the splits there are
            raise DatasetError(where, ref.missing_split(list(info.splits), task=task)) from None
        raise DatasetError(where, f"cannot be loaded: {exc}") from None
    if isinstance(data, hf_datasets.DatasetDict):
        if ref.split not in data:
            raise DatasetError(where, ref.missing_split(list(data), task=task))
        data = data[ref.split]
    if not isinstance(data, hf_datasets.Dataset):
        raise DatasetError(
            where, f"loaded as {type(data).__name__}, not a Dataset; streaming is not supported"
        )
    return data


def _find_columns(data: datasets.Dataset, ref: DatasetRef) -> tuple[str, str, tuple[str, ...] | None]:
    import datasets as hf_datasets

    features, where = data.features, str(ref)
    for named in (ref.image_column, ref.label_column):
        if named is not None:
            check_column(features, named, ref)
    image = ref.image_column or _column(features, hf_datasets.Image, "image", "Image() feature",
                                        _IMAGE_FALLBACKS, ref)
    label = ref.label_column or _column(features, hf_datasets.ClassLabel, "label", "ClassLabel feature",
                                        _LABEL_FALLBACKS, ref)
    _check_image_column(features, image, where)
    feature = features[label]
    if isinstance(feature, hf_datasets.ClassLabel):
        return image, label, tuple(feature.names)
    if not (isinstance(feature, hf_datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise DatasetError(
            where,
            f"label column '{label}' holds {feature!r}; evaluation needs integer class labels "
            "(a ClassLabel or an int column).",
        )
    return image, label, None


def _check_image_column(features: Any, column: str, where: str) -> None:
    """Refuse an image column of class labels or numbers (an ``image_column`` naming the labels' or ids' column):
    no image is one number, and the pass failed on it with a TypeError or an IndexError ('unexpected error')."""
    import datasets as hf_datasets

    feature = features[column]
    if isinstance(feature, hf_datasets.ClassLabel) or (
        isinstance(feature, hf_datasets.Value) and feature.dtype not in _ENCODED
    ):
        raise DatasetError(
            where,
            f"image column '{column}' holds {feature!r}, one number per example, not images (an Image(), their "
            f"bytes or files, or pixel arrays). Its columns: {_columns(features)}.",
        )


def _as_images(data: datasets.Dataset, column: str) -> datasets.Dataset:
    """``data`` with ``column`` an ``Image()`` that decodes, where it holds images without saying so, which the
    batches would take for pixel arrays: parquet written by pandas or pyarrow (no datasets metadata) has PNG /
    JPEG bytes, bare or as ``{bytes, path}``; a CSV or a dict has the images' files (paths or URLs); a dataset
    saved after ``cast_column(..., Image(decode=False))`` has them undecoded."""
    import datasets as hf_datasets

    feature = data.features[column]
    if isinstance(feature, hf_datasets.Image):
        return data if feature.decode else data.cast_column(column, replace(feature, decode=True))
    if (isinstance(feature, hf_datasets.Value) and feature.dtype in _ENCODED) or (
        isinstance(feature, dict) and set(feature) <= {"bytes", "path"}
        and isinstance(feature.get("bytes"), hf_datasets.Value) and feature["bytes"].dtype in _ENCODED[:2]
    ):
        return data.cast_column(column, hf_datasets.Image())
    return data


def _check_pixels(data: datasets.Dataset, column: str, where: str) -> None:
    """Refuse an image column of pixel values that an image processor has already normalised (a ``pixel_values``
    column kept from training, often without its images): the evaluation runs each model's own processor on images,
    and read as an image such an array is a dark smudge, scored without a word (near chance on the fixtures).

    An image's floats dip below 0 only by a resampling's undershoot (bicubic, Lanczos), a small share of its
    range, which the batches clip as before; normalised values go far below (black is -1 for a mean and std of
    0.5, -2.1 for ImageNet's).

    Raises:
        DatasetError: the first example's pixels are floats well below 0, which no image holds.
    """
    import datasets as hf_datasets
    import numpy as np

    if isinstance(data.features[column], hf_datasets.Image):
        return
    first = np.asarray(data[0][column])
    if first.dtype.kind == "f" and first.size and first.min() < -_UNDERSHOOT * max(float(first.max()), 1.0):
        raise DatasetError(
            where,
            f"image column '{column}' holds pixel values an image processor has normalised (the first "
            f"example's values run from {first.min():.2f} to {first.max():.2f}), not images; the evaluation "
            "runs each model's own processor on the images: give the split with its images.",
        )


def _column(features: Any, kind: type, what: str, typed: str, fallbacks: Sequence[str], ref: DatasetRef) -> str:
    """The first column of feature type ``kind``, else the first of the usual ``fallbacks`` names."""
    found = next((name for name, f in features.items() if isinstance(f, kind)), None)
    found = found or next((name for name in fallbacks if name in features), None)
    if found is None:
        named = replace(ref, **{f"{what}_column": "COLUMN"})
        raise DatasetError(
            str(ref), f"has no {what} column: no {typed} and none named {', '.join(fallbacks)}. Its columns: "
            f"{_columns(features)}. Name the one to read: `{named.recipe_line}` in a recipe, "
            f"--{what}-column COLUMN for `hubmerge evaluate`, its {what} column cell in the web app.",
        )
    return found


def check_column(features: Any, column: str, ref: DatasetRef) -> None:
    """Refuse a ``column`` that ``ref`` names (its ``label_column`` or ``image_column``) and its split lacks.

    Raises:
        DatasetError: the split has no such column (a ``label_column`` or ``image_column`` misspelt); its
            columns are listed.
    """
    if column not in features:
        raise DatasetError(str(ref), f"has no column '{column}' (named as its {_naming(ref, column)}). "
                                     f"Its columns: {_columns(features)}.")


def _naming(ref: DatasetRef, column: str) -> str:
    return " and ".join(key for key in ("label_column", "image_column") if getattr(ref, key) == column)


def _columns(features: Any) -> str:
    return ", ".join(f"{name} ({type(f).__name__})" for name, f in features.items()) or "none"


def load_task_data(
    task: str,
    ref: DatasetRef,
    *,
    max_samples: int | None = None,
    token: str | None = None,
) -> TaskData:
    """Load ``ref``'s split for ``task``, find its columns and take at most ``max_samples`` rows.

    ``max_samples`` takes a seeded random subset (seed 0, kept in dataset order), the same on every
    call: a prefix would be biased on datasets that are sorted by class.

    Raises:
        DatasetError: the dataset, split or columns (found, or named by ``ref``) cannot be found, labels are
            negative (an unlabelled split) or beyond the class names, the images are pixel values already
            normalised, or the split is empty.
    """
    import numpy as np

    where = str(ref)
    data = _load_split(ref, task=task, token=token)
    image, label, names = _find_columns(data, ref)
    data = _as_images(data.select_columns([image, label]), image)
    total = len(data)
    if total == 0:
        raise DatasetError(where, f"split '{ref.split}' is empty")
    _check_pixels(data, image, where)
    if max_samples is not None and max_samples < total:
        chosen = np.sort(np.random.default_rng(_SUBSET_SEED).choice(total, size=max_samples, replace=False))
        data = data.select(chosen.tolist())
    task_data = TaskData(task, ref, data, image, label, names, total)
    labels = task_data.labels()
    if labels.min() < 0:
        raise DatasetError(
            where,
            f"split '{ref.split}' has examples without a label ({label} = {labels.min()}); "
            "evaluate on a labelled split (e.g. :validation).",
        )
    if names is not None and labels.max() >= len(names):  # a ClassLabel read from metadata is not checked
        raise DatasetError(
            where,
            f"split '{ref.split}' has labels up to {labels.max()} but its ClassLabel '{label}' names "
            f"{len(names)} classes: its features (in its card, or its parquet files' metadata) list too few class "
            "names; correct them.",
        )
    return task_data


# ---------------------------------------------------------------------------- labels


def _normalise(name: str) -> str:
    return _SEPARATORS.sub(" ", str(name).strip().lower()).strip()


def _is_generic(id2label: Mapping[int, str]) -> bool:
    """True for transformers' placeholder labels (LABEL_0, ...), which carry no class names."""
    return all(_GENERIC_LABEL.match(str(label)) for label in id2label.values())


def names_differ(names: Sequence[str] | None, id2label: Mapping[int, str], head_size: int) -> bool:
    """The dataset names its classes, the head its outputs, and the two lists differ (case, spaces, ``_``
    and ``-`` aside): matching them by position is then an assumption that results must state."""
    if names is None or _is_generic(id2label):
        return False
    return [_normalise(n) for n in names] != [_normalise(str(id2label.get(i, ""))) for i in range(head_size)]


def label_targets(
    task: str,
    data: TaskData,
    id2label: Mapping[int, str],
    head_size: int,
    *,
    match: LabelMatch = "name",
) -> np.ndarray | None:
    """How the dataset's labels index the head: None when they already do, else a lookup array.

    ``result[dataset_label]`` is the head output that means the same class.

    Args:
        task: the task, for messages.
        data: the task's data (its class names and labels).
        id2label: the head's labels (index -> name).
        head_size: the number of head outputs.
        match: ``"name"`` matches class names (case, spaces, ``_``, ``-`` ignored) and remaps when
            the orders differ; ``"position"`` trusts that label i is output i.

    Raises:
        HeadMismatchError: the names cannot be matched (differing names are listed), the sizes
            disagree, or an integer label is out of the head's range.
    """
    return _label_lookup(task, data.class_names, f"dataset {data.ref}", id2label, head_size, match,
                         labels_needed=lambda: int(data.labels().max()) + 1)


def check_head_labels(task: str, ref: DatasetRef, class_names: Sequence[str], id2label: Mapping[int, str],
                      *, match: LabelMatch = "name") -> None:
    """Before the merge: refuse the head its plan gives ``task`` when its evaluation on ``ref``, whose
    ``class_names`` the dataset's card lists, would refuse it (see :func:`label_targets`).

    Raises:
        HeadMismatchError: as :func:`label_targets` would, after the merge.
    """
    _label_lookup(task, tuple(class_names), f"dataset {ref}", id2label, len(id2label), match,
                  labels_needed=lambda: len(class_names))


def _label_lookup(task: str, names: tuple[str, ...] | None, where: str, id2label: Mapping[int, str], head_size: int,
                  match: LabelMatch, *, labels_needed: Callable[[], int]) -> np.ndarray | None:
    """:func:`label_targets` on the dataset's class ``names``; ``labels_needed`` (the largest label + 1) is
    asked only for a dataset of plain integer labels."""
    import numpy as np

    model_names = [str(id2label.get(i, "")) for i in range(head_size)]
    if names is None or match == "position" or _is_generic(id2label):
        needed = labels_needed() if names is None else len(names)
        if head_size < needed:
            raise HeadMismatchError(
                task,
                f"the head has {head_size} outputs but {where} has "
                + (f"labels up to {needed - 1}" if names is None else f"{needed} classes")
                + ". Evaluate each task with the head made for it.",
            )
        return None
    if [_normalise(n) for n in names] == [_normalise(n) for n in model_names]:
        return None
    by_name: dict[str, int] = {}
    for index, label in enumerate(model_names):
        by_name.setdefault(_normalise(label), index)
    missing = [name for name in names if _normalise(name) not in by_name]
    if not missing and len(by_name) == head_size:
        log.info("task %s: %s orders its classes unlike the head; remapping by name", task, where)
        return np.asarray([by_name[_normalise(name)] for name in names], dtype=np.int64)
    if head_size != len(names):
        raise HeadMismatchError(
            task,
            f"the head has {head_size} outputs but {where} has {len(names)} classes, and their names do "
            f"not match (e.g. dataset {_few(missing or names)} vs head {_few(model_names)}). "
            "Evaluate each task with the head made for it, or check the dataset's split and config.",
        )
    extra = [name for name in model_names if _normalise(name) not in {_normalise(n) for n in names}]
    raise HeadMismatchError(
        task,
        f"the head's id2label and {where} name their {head_size} classes differently: dataset "
        f"{_few(missing)} vs head {_few(extra)}. If both are in the same order, match them by position: "
        "match_labels='position' (CLI: --match-labels position; web app: match classes by position).",
    )


def _few(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"
