"""Per-task heads: which labels a task has, and whether a model's head fits them.

Decided at plan time, from headers and small files only. A task's classes come, in order of
authority, from its dataset's ``ClassLabel`` feature (a local ``save_to_disk`` directory: reading
its features costs no data), the class-name registry, or the fine-tuned model's own ``id2label``.

* A head whose size fits keeps its trained weights, never re-initialised. If the model's labels are
  the dataset's in another order, the head's rows are permuted to the dataset's order; labels that
  disagree with the dataset's names are an error (silently mislabelling would be worse).
* A head that does not fit (e.g. a base model's ImageNet head used for a task) is re-initialised to
  the right size, seeded, like ``nn.Linear`` — and reported, so the card can flag it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import DatasetError, HeadMismatchError, UnknownTaskError
from ..recipe import DatasetRef
from . import classnames

__all__ = ["HeadDecision", "decide_head", "head_seed", "read_dataset_labels", "task_labels"]

LabelSource = Literal["dataset", "registry", "config"]
_GENERIC = re.compile(r"^LABEL_\d+$")


@dataclass(frozen=True)
class HeadDecision:
    """What happens to one task's head.

    Attributes:
        task: the task.
        labels: the id2label the output carries for it (index -> name).
        label_source: where those labels came from.
        reinitialized: the head did not fit and was re-initialised (its accuracy means nothing yet).
        reason: why, in words ("" when kept).
        rows: when kept, the head rows in output order (None: as they are).
    """

    task: str
    labels: dict[int, str]
    label_source: LabelSource
    reinitialized: bool = False
    reason: str = ""
    rows: tuple[int, ...] | None = None

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
    """Class names from a local ``save_to_disk`` dataset's ``ClassLabel`` feature; None when not local.

    Raises:
        DatasetError: the directory is not a dataset, or it has no ClassLabel column.
    """
    path = Path(ref.path).expanduser()
    if not path.is_dir():
        return None
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(ref.path, f"not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if ref.split not in loaded:
            raise DatasetError(ref.path, f"has no split '{ref.split}' (splits: {', '.join(loaded)})")
        loaded = loaded[ref.split]
    for name, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
    raise DatasetError(ref.path, f"has no ClassLabel column (columns: {', '.join(loaded.features)})")


def _config_labels(config: Mapping[str, Any] | None) -> list[str] | None:
    id2label = (config or {}).get("id2label")
    if not id2label:
        return None
    ordered = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    return None if all(_GENERIC.match(n) for n in ordered) else ordered


def task_labels(
    task: str, dataset: DatasetRef | None, config: Mapping[str, Any] | None
) -> tuple[list[str], LabelSource] | None:
    """The task's class names and where they came from, or None when nothing says."""
    if dataset is not None:
        names = read_dataset_labels(dataset)
        if names is not None:
            return names, "dataset"
    try:
        return classnames.class_names(task), "registry"
    except UnknownTaskError:
        pass
    labels = _config_labels(config)
    return (labels, "config") if labels is not None else None


def head_seed(task: str) -> int:
    """A stable seed per task, so re-initialised heads are the same on every run and machine."""
    return int.from_bytes(hashlib.sha256(f"hubmerge-head:{task}".encode()).digest()[:8], "little") & (2**63 - 1)


def decide_head(
    task: str,
    *,
    head_rows: int,
    config: Mapping[str, Any] | None,
    dataset: DatasetRef | None,
) -> HeadDecision:
    """Keep, reorder or re-initialise one task's head (see the module docstring).

    Args:
        task: the task name.
        head_rows: the model's head output size (from the header of its weight).
        config: the model's ``config.json`` (its ``id2label``).
        dataset: the task's dataset, when the recipe names one.

    Raises:
        HeadMismatchError: the model's labels disagree with its dataset's names.
    """
    found = task_labels(task, dataset, config)
    own = _config_labels(config)
    if found is None:
        labels = own or [f"LABEL_{i}" for i in range(head_rows)]
        return HeadDecision(task, dict(enumerate(labels)), "config")
    labels, source = found
    if head_rows != len(labels):
        return HeadDecision(
            task, dict(enumerate(labels)), source, reinitialized=True,
            reason=f"the head has {head_rows} outputs but the task has {len(labels)} classes ({source})",
        )
    if own is None or [_normalise(n) for n in own] == [_normalise(n) for n in labels]:
        return HeadDecision(task, dict(enumerate(labels)), source)
    if source != "dataset":
        return HeadDecision(task, dict(enumerate(own)), "config")  # the model knows its labels better than a guess
    position = {_normalise(n): i for i, n in enumerate(own)}
    if sorted(position) == sorted(_normalise(n) for n in labels) and len(position) == len(labels):
        rows = tuple(position[_normalise(n)] for n in labels)
        return HeadDecision(task, dict(enumerate(labels)), source, rows=rows)
    differing = [n for n in own if _normalise(n) not in {_normalise(x) for x in labels}][:5]
    raise HeadMismatchError(
        task,
        f"the model's labels disagree with the dataset {dataset}: e.g. {', '.join(map(repr, differing))} "
        "are not among its class names. Check that the model was fine-tuned on this dataset.",
    )


def id2label_config(config: Mapping[str, Any] | None, decision: HeadDecision) -> dict[str, Any]:
    """``config`` with the decision's labels and the ``hubmerge_head`` note."""
    out = dict(config or {})
    out["id2label"] = {str(i): name for i, name in decision.labels.items()}
    out["label2id"] = {name: i for i, name in decision.labels.items()}
    out.pop("num_labels", None)
    if "num_classes" in out:
        out["num_classes"] = len(decision.labels)
    out["hubmerge_head"] = decision.report()
    return out


def check_unique(labels: Sequence[str], task: str) -> None:
    if len(set(labels)) != len(labels):
        raise HeadMismatchError(task, "its class names are not unique")
