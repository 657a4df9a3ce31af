"""Per-task heads: which labels a task has, whether a model's head fits them, and how the output records it.

Decided at plan time, from headers and small files only, by one function for every family (the
family row says which tensors are the head). A task's classes come, in order of authority, from:

1. its dataset's ``ClassLabel`` feature, when the recipe names a dataset that is a local
   ``save_to_disk`` directory (reading its features costs no data). Hub datasets are not read at
   plan time: that would be a network round trip per task before any weight moves, and the
   evaluation reads their features anyway and matches them to the head by name;
2. the class-name registry (``hubmerge.vision.classnames``), looked up by the dataset's id (e.g.
   ``tanganke/eurosat``), then by the task name;
3. the fine-tuned model's own ``config.json`` ``id2label`` (placeholder ``LABEL_i`` names count as none).

What happens to the head:

* **kept**: a head whose output size is the number of classes keeps its trained weights, copied
  bit for bit, and the task's ``id2label``/``label2id`` go into its config. It is never
  re-initialised.
* **reordered**: when the labels come from the dataset and the model's ``id2label`` names the same
  classes in another order, the head's rows (weight and bias) are permuted into the dataset's order
  and the dataset's ``id2label`` is written. Output ``i`` then means dataset label ``i``, which is what
  every consumer of a standard classifier assumes (rewriting ``id2label`` instead would leave heads
  whose order differs from their dataset's).
* **mismatch**: a model whose ``id2label`` names other classes than its dataset is a
  ``HeadMismatchError``: silently relabelling a head would be worse than stopping. Registry names
  are a spelling convention, not the model's truth: when they disagree with (or reorder) the model's
  own non-placeholder names, the model's names and order are kept, and its head is untouched. So are
  they when the evaluation is to match the dataset's classes by position (``--match-labels position``).
* **re-initialised**: a head whose size does not fit (e.g. the base model's ImageNet head used for a
  task) is replaced by a new ``nn.Linear``-initialised one of the right size, seeded by the task name
  (the same bytes on every run), in the dtype of the model's head, and reported with the reason:
  plans print it, ``heads/<task>/config.json`` records it and the card flags the task.

The output records the decisions for machines (see ``heads_index``):

* ``heads/<task>/config.json``: the task model's config with the task's ``id2label``/``label2id`` and a
  ``hubmerge_head`` note ``{reinitialized, reason, label_source, reordered}``;
* ``hubmerge_heads.json``: ``{"format": "hubmerge-heads/1", "hubmerge_version", "family", "library", "target_modules",
  "default_task", "tasks": {task: {"num_classes", "head_tensors", "files", "label_source",
  "reinitialized", "reason", "reordered", "model"}}, "processor": {...}, "averaged_statistics": [...]}``,
  tasks in recipe order; ``averaged_statistics`` names the BatchNorm statistics that are the fine-tunes'
  mean rather than the method's result (``hubmerge.vision.families``).
  The root ``config.json`` is the default task's ``heads/<task>/config.json``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .. import __version__
from ..errors import DatasetError, HeadMismatchError, UnknownTaskError
from . import classnames
from .families import Family

if TYPE_CHECKING:
    from ..recipe import DatasetRef

__all__ = [
    "HEADS_INDEX",
    "HEADS_INDEX_FORMAT",
    "HeadDecision",
    "TaskHead",
    "decide_head",
    "head_seed",
    "heads_index",
    "id2label_config",
    "read_dataset_labels",
    "task_labels",
]

log = logging.getLogger(__name__)

LabelSource = Literal["dataset", "registry", "config"]
HEADS_INDEX = "hubmerge_heads.json"
HEADS_INDEX_FORMAT = "hubmerge-heads/1"
_GENERIC = re.compile(r"^label_?\d+$", re.IGNORECASE)
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")


@dataclass(frozen=True)
class HeadDecision:
    """What happens to one task's head.

    Attributes:
        task: the task.
        labels: the id2label the output carries for it (index -> name), one per head output.
        label_source: where those labels came from.
        reinitialized: the head did not fit and was re-initialised (its accuracy means nothing yet).
        reason: why, in words ("" when kept).
        rows: when kept but reordered, the model's head rows in output order (None: as they are).
    """

    task: str
    labels: dict[int, str]
    label_source: LabelSource
    reinitialized: bool = False
    reason: str = ""
    rows: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def report(self) -> dict[str, Any]:
        """The machine-readable note stored in the task's config (``hubmerge_head``)."""
        return {
            "reinitialized": self.reinitialized,
            "reason": self.reason,
            "label_source": self.label_source,
            "reordered": self.rows is not None,
        }


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def read_dataset_labels(ref: DatasetRef) -> list[str] | None:
    """Class names of a local ``save_to_disk`` dataset's ``label_column``, else its first ``ClassLabel`` column;
    None when not local.

    Only the dataset's features are read (its arrow files are memory-mapped, not read). A Hub
    dataset id gives None: it is not fetched at plan time.

    Args:
        ref: the dataset (its ``split`` is used when the directory holds a ``DatasetDict``).

    Returns:
        The class names in label order, or None for a Hub dataset (or a local directory of raw
        data files, whose labels only a full load would tell, or a named label column of plain integers).

    Raises:
        DatasetError: a local-looking path that does not exist, a split that is not there, a named label
            column that is not there, or no ClassLabel column.

    Example:
        >>> read_dataset_labels(DatasetRef("data/eurosat_test"))
        ['annual crop land', 'forest', ...]
    """
    from ..evaluation.data import check_column, label_class_names, local_dataset_dir

    path = local_dataset_dir(ref)
    if path is None:
        return None
    if not any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        return None  # a folder of data files: its labels are only known once loaded
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(ref.path, f"is not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if ref.split not in loaded:
            raise DatasetError(ref.path, ref.missing_split(list(loaded)))
        loaded = loaded[ref.split]
    if ref.label_column is not None:
        check_column(loaded.features, ref.label_column, ref)
    names = label_class_names(loaded.features, ref.label_column)  # the evaluation's labels' names
    if names is None and ref.label_column is None:
        raise DatasetError(ref.path, f"has no ClassLabel column (columns: {', '.join(loaded.features)})")
    return list(names) if names is not None else None  # a named column of plain integers has no names


def _config_labels(config: Mapping[str, Any] | None) -> list[str] | None:
    id2label = (config or {}).get("id2label")
    if not id2label:
        return None
    try:
        ordered = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    except (TypeError, ValueError):
        return None
    return None if all(_GENERIC.match(n) for n in ordered) else ordered


def _registry_labels(*names: str | None) -> list[str] | None:
    for name in names:
        if not name:
            continue
        try:
            return list(classnames.class_names(name))
        except UnknownTaskError:
            continue
    return None


def task_labels(
    task: str, dataset: DatasetRef | None, config: Mapping[str, Any] | None
) -> tuple[list[str], LabelSource] | None:
    """The task's class names and where they came from, or None when nothing says.

    Args:
        task: the task name (looked up in the registry).
        dataset: the task's dataset, if the recipe names one.
        config: the fine-tuned model's ``config.json``.

    Returns:
        ``(names, source)`` with source ``dataset``, ``registry`` or ``config``; None when none of
        them knows (the model's config has no or only placeholder labels).

    Raises:
        DatasetError: a local dataset that cannot be read (see ``read_dataset_labels``).

    Example:
        >>> task_labels("eurosat", None, None)[1]
        'registry'
    """
    if dataset is not None:
        names = read_dataset_labels(dataset)
        if names is not None:
            return names, "dataset"
    registry = _registry_labels(dataset.path if dataset is not None else None, task)
    if registry is not None:
        return registry, "registry"
    labels = _config_labels(config)
    return (labels, "config") if labels is not None else None


def head_seed(task: str) -> int:
    """A stable seed per task, so re-initialised heads are the same on every run and machine."""
    return int.from_bytes(hashlib.sha256(f"hubmerge-head:{task}".encode()).digest()[:8], "little") & (2**63 - 1)


def _unique(names: Sequence[str], task: str, what: str) -> None:
    normalised = [_normalise(n) for n in names]
    repeated = sorted({n for n in names if normalised.count(_normalise(n)) > 1})
    if repeated:
        raise HeadMismatchError(task, f"{what} repeat class names ({', '.join(map(repr, repeated[:5]))}); "
                                      "labels must name each class once")


def _renaming_keeps(
    task: str, source: LabelSource, own: list[str] | None, head_rows: int, dataset: DatasetRef | None
) -> str:
    """The way out where the registry's classes for a task's name replace a head trained on classes of its own
    (its config names as many as it has outputs): a task named 'mnist' for a 5-digit fine-tune lost its head."""
    if source != "registry" or own is None or len(own) != head_rows:
        return ""
    if dataset is not None and _registry_labels(dataset.path) is not None:
        return ""  # the dataset's id said the classes, not the task's name
    return (f"; the registry knows a task by this name: if this model was fine-tuned on its own {head_rows} "
            f"classes ({', '.join(own[:3])}{', ...' if head_rows > 3 else ''}), name the task otherwise than "
            f"'{task}' to keep its head")


def decide_head(
    task: str,
    *,
    head_rows: int,
    config: Mapping[str, Any] | None,
    dataset: DatasetRef | None,
    match: Literal["name", "position"] = "name",
) -> HeadDecision:
    """Keep, reorder or re-initialise one task's head (the policy is in the module docstring).

    Args:
        task: the task name.
        head_rows: the model's head output size (from the header of its weight; 0 when it has none).
        config: the model's ``config.json`` (its ``id2label``).
        dataset: the task's dataset, when the recipe names one.
        match: how the evaluation will meet the dataset's classes: with ``"position"`` (class i is
            output i, the names differ), the dataset's names neither rename nor reorder the model's own.

    Returns:
        The decision, with the labels the output will carry.

    Raises:
        HeadMismatchError: the model's labels disagree with its dataset's names, or labels repeat.
        DatasetError: the task's local dataset cannot be read.

    Example:
        >>> decide_head("eurosat", head_rows=10, config=None, dataset=None).label_source
        'registry'
    """
    found = task_labels(task, dataset, config)
    own = _config_labels(config)
    if found is None:
        if head_rows == 0:
            raise HeadMismatchError(task, "the model has no classification head and nothing names the "
                                          "task's classes: give the task a dataset or a known task name")
        labels = own if own is not None and len(own) == head_rows else [f"LABEL_{i}" for i in range(head_rows)]
        return HeadDecision(task, dict(enumerate(labels)), "config")
    labels, source = found
    if head_rows != len(labels):
        return HeadDecision(
            task, dict(enumerate(labels)), source, reinitialized=True,
            reason=(f"the head has {head_rows} outputs" if head_rows else "the model has no head")
            + f" but the task has {len(labels)} classes (from the {source})"
            + _renaming_keeps(task, source, own, head_rows, dataset),
        )
    if own is None or len(own) != len(labels) or [_normalise(n) for n in own] == [_normalise(n) for n in labels]:
        return HeadDecision(task, dict(enumerate(labels)), source)
    if source == "dataset" and match == "position":  # the evaluation matches by index, as for a Hub dataset
        return HeadDecision(task, dict(enumerate(own)), "config")
    if source != "dataset":  # the model knows its labels better than a registry's spelling of them
        log.info("task %s: the model's labels (%s, ...) are not the registry's (%s, ...); keeping the model's",
                 task, ", ".join(own[:3]), ", ".join(labels[:3]))
        return HeadDecision(task, dict(enumerate(own)), "config")
    _unique(labels, task, f"the dataset {dataset}'s labels")
    _unique(own, task, "the model's id2label")
    position = {_normalise(n): i for i, n in enumerate(own)}
    if set(position) == {_normalise(n) for n in labels}:
        rows = tuple(position[_normalise(n)] for n in labels)
        return HeadDecision(task, dict(enumerate(labels)), source, rows=rows)
    expected = {_normalise(x) for x in labels}
    differing = [n for n in own if _normalise(n) not in expected][:5]
    raise HeadMismatchError(
        task,
        f"the model's id2label disagrees with the dataset {dataset}: {', '.join(map(repr, differing))} "
        f"{'is' if len(differing) == 1 else 'are'} not among the dataset's class names "
        f"(e.g. {', '.join(map(repr, labels[:5]))}). Check that the model was fine-tuned on this dataset, "
        "or name the right dataset for the task. If these are the model's classes in the same order under other "
        "names, match them by position: --match-labels position (merge --evaluate, push; from Python "
        "match_labels='position'; web app: match classes by position).",
    )


def id2label_config(config: Mapping[str, Any] | None, decision: HeadDecision) -> dict[str, Any]:
    """``config`` with the decision's labels (``id2label``, ``label2id``) and the ``hubmerge_head`` note."""
    out = dict(config or {})
    out["id2label"] = {str(i): name for i, name in decision.labels.items()}
    out["label2id"] = {name: i for i, name in decision.labels.items()}
    out.pop("num_labels", None)
    if "num_classes" in out:
        out["num_classes"] = decision.num_classes
    out["hubmerge_head"] = decision.report()
    return out


@dataclass(frozen=True)
class TaskHead:
    """One task's entry in ``hubmerge_heads.json``: its head tensors, files and decision."""

    task: str
    model: str
    tensors: tuple[str, ...]
    files: tuple[str, ...]
    decision: HeadDecision | None


def heads_index(
    tasks: Sequence[TaskHead],
    *,
    family: Family | None,
    target_modules: Sequence[str],
    default_task: str | None,
    processor: Mapping[str, Any],
    averaged_statistics: Sequence[str] = (),
) -> dict[str, Any]:
    """The content of ``hubmerge_heads.json`` (the layout is in the module docstring).

    Args:
        tasks: every task's head, in recipe order.
        family: the inputs' family (None for a generic merge).
        target_modules: the merged prefixes.
        default_task: whose head the root carries.
        processor: what ``processors.processor_info`` says about the output's processor.
        averaged_statistics: the tensors the merge averaged instead of applying the method.

    Returns:
        Plain JSON-ready data.
    """
    entries: dict[str, Any] = {}
    for head in tasks:
        decision = head.decision
        head_tensors = [t for t in head.tensors if family is None or family.is_head(t)]
        entries[head.task] = {
            "model": head.model,
            "num_classes": decision.num_classes if decision is not None else None,
            "head_tensors": head_tensors,
            "tensors": list(head.tensors),
            "files": list(head.files),
            **(decision.report() if decision is not None else {}),
        }
    return {
        "format": HEADS_INDEX_FORMAT,
        "hubmerge_version": __version__,  # what made the output; the card says it, for reproduction
        "family": family.name if family is not None else None,
        "library": family.library if family is not None else None,
        "target_modules": list(target_modules),
        "default_task": default_task,
        "tasks": entries,
        "processor": dict(processor),
        "averaged_statistics": list(averaged_statistics),
    }
