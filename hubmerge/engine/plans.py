"""The plan of a merge: what ``plan`` decides from headers alone and ``execute`` carries out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..methods import MergeMethod
from ..recipe import ModelEntry, ModelRef, Recipe
from ..vision.families import Family
from ..vision.heads import HeadDecision
from ..weights.dtypes import DTYPES
from ..weights.index import ModelWeights

DEFAULT_GROUP_BYTES = 16 * 2**20
DEFAULT_BUDGET_BYTES = 256 * 2**20


@dataclass(frozen=True)


class InputModel:
    """One input of the merge, opened and pinned."""

    label: str
    ref: ModelRef
    role: Literal["base", "model"]
    entry: ModelEntry | None
    weights: ModelWeights = field(repr=False, compare=False)
    config: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def revision(self) -> str | None:
        return self.weights.source.revision


@dataclass(frozen=True)


class TensorPlan:
    """One output tensor: how it is made and from which inputs (indices into ``MergePlan.inputs``).

    ``merge``: the method over the readers; ``average``: the readers' mean (a BatchNorm statistic under
    a method that takes a base); ``copy``: one reader's tensor (``rows`` reorders its first dimension);
    ``init``: a freshly initialised head tensor (seeded by ``init_seed``).
    """

    name: str
    action: Literal["merge", "average", "copy", "init"]
    shape: tuple[int, ...]
    out_dtype: str
    readers: tuple[int, ...]
    rows: tuple[int, ...] | None = None
    init_seed: int | None = None
    init_fan_in: int | None = None

    @property
    def out_bytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.out_dtype].bits // 8


@dataclass(frozen=True)


class HeadPlan:
    """The tensors a task keeps for itself (its head), from that task's model, and what was decided.

    ``decision`` (None for inputs of no known family) says which labels the head gets, from where,
    and whether it is kept, reordered or re-initialised (see ``hubmerge.vision.heads``).
    """

    task: str
    model: int
    tensors: tuple[TensorPlan, ...]
    decision: HeadDecision | None = None

    @property
    def labels(self) -> dict[int, str]:
        """The task's id2label in the output ({} when no family decided it)."""
        return dict(self.decision.labels) if self.decision is not None else {}

    @property
    def reinitialized(self) -> bool:
        return self.decision is not None and self.decision.reinitialized

    @property
    def reason(self) -> str:
        """Why the head was re-initialised ("" when kept)."""
        return self.decision.reason if self.decision is not None else ""


@dataclass(frozen=True)


class MergePlan:
    """Everything ``execute`` needs, decided from headers alone. Printable and serialisable."""

    recipe: Recipe
    method: MergeMethod = field(repr=False)
    inputs: tuple[InputModel, ...]
    tensors: tuple[TensorPlan, ...]
    heads: tuple[HeadPlan, ...]
    skipped: tuple[tuple[str, str], ...]  # (model label, tensor name) left out of the output
    default_input: int  # whose config and non-merged tensors the root gets
    files_input: int  # whose processor / config files are copied
    base_input: int | None
    family: Family | None = None

    # ------------------------------------------------------------------ sizes

    def _read_bytes(self, tensor: TensorPlan) -> int:
        return sum(self.inputs[i].weights.tensors[tensor.name].nbytes for i in tensor.readers)

    @property
    def bytes_to_read(self) -> int:
        total = sum(self._read_bytes(t) for t in self.tensors)
        return total + sum(self._read_bytes(t) for h in self.heads for t in h.tensors)

    @property
    def bytes_to_write(self) -> int:
        return sum(t.out_bytes for t in self.tensors) + sum(t.out_bytes for h in self.heads for t in h.tensors)

    @property
    def counts(self) -> dict[str, int]:
        merged = sum(1 for t in self.tensors if t.action == "merge")
        averaged = sum(1 for t in self.tensors if t.action == "average")
        return {
            "merged": merged,
            "averaged": averaged,
            "copied": len(self.tensors) - merged - averaged,
            "head": sum(len(h.tensors) for h in self.heads),
            "skipped": len(self.skipped),
        }

    @property
    def merged_dtypes(self) -> tuple[str, ...]:
        """The dtypes (torch's names) the merged tensors are written in: one, from the recipe or the inputs."""
        return tuple(sorted({DTYPES[t.out_dtype].torch_name or t.out_dtype
                             for t in self.tensors if t.action in ("merge", "average")}))

    @property
    def working_dtype(self) -> str:
        """What the merge computes in (torch's name): float32, or float64 for an output written in float64,
        which float32 arithmetic would round."""
        return "float64" if "float64" in self.merged_dtypes else "float32"

    def peak_memory_estimate(
        self, *, group_bytes: int = DEFAULT_GROUP_BYTES, budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> int:
        """Bytes of tensor buffers alive at once in ``execute`` (the Python/torch runtime comes on top).

        Reads ahead (the budget) + the group being merged as read + its working set (``working_dtype``):
        three copies for a running sum (result, anchor, current input), one per input for other methods.
        """
        value_bytes = 8 if self.working_dtype == "float64" else 4
        largest = max((math.prod(t.shape) * value_bytes for t in self.tensors), default=0)
        total = sum(math.prod(t.shape) * value_bytes for t in self.tensors)
        group = min(max(group_bytes * 2, largest), total)
        working = 3 if self.method.linear is not None else len(self.inputs) + 1
        read_ahead = min(budget_bytes, self.bytes_to_read)
        return read_ahead + min(max(group_bytes, largest), self.bytes_to_read) + working * group

    # ------------------------------------------------------------------ rendering

    def __repr__(self) -> str:
        """One line for a notebook or a log (the generated one ran to every tensor of every input)."""
        from ..plan_summary import human_bytes

        tensors = ", ".join(f"{count} {what}" for what, count in self.counts.items() if count or what != "averaged")
        return (f"MergePlan({self.method.name}, {len(self.inputs)} inputs, tensors: {tensors}, "
                f"read {human_bytes(self.bytes_to_read)}, write {human_bytes(self.bytes_to_write)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "parameters": dict(self.recipe.parameters),
            "inputs": [
                {
                    "label": m.label,
                    "model": str(m.ref),
                    "role": m.role,
                    "revision": m.revision,
                    "files": list(m.weights.files),
                    "tensors": len(m.weights.tensors),
                    "bytes": m.weights.total_bytes,
                }
                for m in self.inputs
            ],
            "counts": self.counts,
            "heads": {h.task: {t.name: list(t.shape) for t in h.tensors} for h in self.heads},
            "skipped": [f"{label}:{name}" for label, name in self.skipped],
            "bytes_to_read": self.bytes_to_read,
            "bytes_to_write": self.bytes_to_write,
            "peak_memory_estimate": self.peak_memory_estimate(),
            "default_task": self.recipe.resolved_default_task,
            "family": self.family.name if self.family else None,
            "target_modules": list(self.target_modules),
            "merged_dtypes": list(self.merged_dtypes),
            "head_decisions": {h.task: h.decision.report() | {"classes": len(h.decision.labels)}
                               for h in self.heads if h.decision is not None},
        }

    @property
    def target_modules(self) -> tuple[str, ...]:
        """The merged prefixes: the recipe's, or the detected family's backbone."""
        return merged_prefixes(self.recipe, self.family)


def merged_prefixes(recipe: Recipe, family: Family | None) -> tuple[str, ...]:
    """The recipe's ``target_modules``, else the family's backbone, else () (everything)."""
    return recipe.target_modules or (family.backbone if family else ())

