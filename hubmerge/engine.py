"""Plan a merge from headers alone, then execute it tensor group by tensor group with bounded memory.

``plan`` opens every input (local directory or Hub repo pinned to a commit), reads only the shard
index and safetensors headers, and classifies every tensor: *merge* (a backbone tensor, float, same
shape everywhere), *average* (BatchNorm running statistics under a task-vector method, which could make
a variance negative), *copy* (integer buffers such as ``num_batches_tracked``, and the default task's
head), *head* (kept per task under ``heads/<task>/``) or *skip*. Anything that would fail later fails
here, before a weight byte moves.

What is merged is the recipe's ``target_modules``; without them, the inputs' model family
(``hubmerge.vision.families``, from ``config.json`` or tensor names) gives its backbone prefixes, and
every task's head is decided from its labels (``hubmerge.vision.heads``: kept, reordered or
re-initialised). Inputs of no known family, with no ``target_modules``, are merged whole (any
safetensors model merges; tensors that differ in shape are then a ``ShapeMismatchError``).

``execute`` streams the plan: worker threads prefetch the byte ranges of the next tensor groups from
every input while the device merges the current group in float32 (float64 when that is the output's
dtype); a background thread, a group
behind, casts the results to the output dtype, checks them for NaN/Inf and appends them to
pre-laid-out safetensors shards in a temporary directory that replaces the output only when
everything is written. Linear methods (averages, task arithmetic) are reduced as a running sum into
reused buffers, so memory does not grow with the number of models.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    CancelledError,
    DtypeMismatchError,
    MissingTensorError,
    ModelFilesNotFoundError,
    NonFiniteTensorError,
    PlanError,
    RecipeError,
    ShapeMismatchError,
    UnsupportedArchitectureError,
    UnsupportedDtypeError,
    listed,
)
from .evaluation.report import EVAL_COMPARISON_FILE, EVAL_RESULTS_FILE, EVAL_SCOPE_FILE
from .methods import MergeMethod, get_method
from .recipe import RECIPE_FILE, ModelEntry, ModelRef, Recipe, load_recipe
from .vision.families import (
    TORCHVISION_FAMILY,
    Family,
    detect_family,
    is_running_statistic,
    torchvision_architecture,
)
from .vision.heads import (
    HEADS_INDEX,
    HeadDecision,
    TaskHead,
    decide_head,
    head_seed,
    heads_index,
    id2label_config,
)
from .weights.dtypes import DTYPES, common_float, is_float, is_integer
from .weights.index import INDEX_FILE, SINGLE_FILE, ModelWeights, open_weights
from .weights.sources import LocalSource, WeightSource
from .weights.writer import (
    OutputTensor,
    ShardedWriter,
    atomic_output_dir,
    check_output,
    check_space,
    pack_in_order,
    parse_size,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "HeadPlan",
    "InputModel",
    "MergePlan",
    "MergeResult",
    "TensorPlan",
    "execute",
    "merge",
    "open_source",
    "plan",
    "read_output_recipe",
    "resolve_device",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
HEADS_DIR = "heads"
DEFAULT_GROUP_BYTES = 16 * 2**20
DEFAULT_BUDGET_BYTES = 256 * 2**20
_OUT_DTYPE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".npz")
# An input's own card, indexes and reports are not the merge's: its eval_results.json would put numbers never
# measured on the merge into the card's metadata.
_NOT_COPIED = {"README.md", ".gitattributes", INDEX_FILE, "pytorch_model.bin.index.json", RECIPE_FILE, HEADS_INDEX,
               EVAL_RESULTS_FILE, EVAL_SCOPE_FILE, EVAL_COMPARISON_FILE}
_MAX_COPIED_FILE = 50 * 2**20


# ---------------------------------------------------------------------------- plan data


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
        from .plan_summary import human_bytes

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
        return _merged_prefixes(self.recipe, self.family)


@dataclass(frozen=True)
class MergeResult:
    """What ``execute`` wrote and how long it took."""

    output: Path
    files: tuple[str, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    device: str


# ---------------------------------------------------------------------------- sources


def open_source(ref: ModelRef, *, token: str | None = None, endpoint: str | None = None) -> WeightSource:
    """Open ``ref``: a local directory, or a Hub repo pinned to the commit its revision points to."""
    if ref.path is not None:
        return LocalSource(ref.path)
    from .hub.source import HubSource  # lazy: plain local merges never import the HTTP stack

    assert ref.repo_id is not None
    return HubSource(ref.repo_id, revision=ref.revision, token=token, endpoint=endpoint)


def _open_inputs(
    recipe: Recipe, token: str | None, endpoint: str | None
) -> list[tuple[str, ModelRef, Literal["base", "model"], ModelEntry | None, WeightSource]]:
    wanted: list[tuple[str, ModelRef, Literal["base", "model"], ModelEntry | None]] = []
    if recipe.base_model is not None:
        wanted.append(("base", recipe.base_model, "base", None))
    for i, entry in enumerate(recipe.models):
        wanted.append((entry.task or f"model{i}", entry.model, "model", entry))
    with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
        futures = [pool.submit(open_source, ref, token=token, endpoint=endpoint) for _, ref, _, _ in wanted]
        sources: list[WeightSource] = []
        error: BaseException | None = None
        for future in futures:
            try:
                sources.append(future.result())
            except BaseException as exc:  # keep going so every opened source is closed
                error = error or exc
        if error is not None:
            for source in sources:
                source.close()
            raise error
    return [(label, ref, role, entry, source) for (label, ref, role, entry), source in zip(wanted, sources)]


# ---------------------------------------------------------------------------- plan


def _merged_prefixes(recipe: Recipe, family: Family | None) -> tuple[str, ...]:
    """The recipe's ``target_modules``, else the family's backbone, else () (everything)."""
    return recipe.target_modules or (family.backbone if family else ())


def _in_targets(name: str, prefixes: Sequence[str]) -> bool:
    if not prefixes:
        return True
    for prefix in prefixes:
        p = prefix.rstrip(".")
        if name == p or name.startswith(p + "."):
            return True
    return False


def _layout_order(weights: ModelWeights, names: Sequence[str]) -> list[str]:
    """``names`` in the order they sit in ``weights``' files: sequential reads, fewest seeks."""
    position = {file: i for i, file in enumerate(weights.files)}
    return sorted(names, key=lambda n: (position[weights.tensors[n].file], weights.tensors[n].offset))


def _out_dtype(code: str, recipe: Recipe, merged: str | None = None) -> str:
    """The dtype a tensor stored as ``code`` is written in: the recipe's for floats when it names one; else
    a float copied beside merged tensors (``merged``) in one that holds both, so that a float16 fine-tune's
    head, beside a backbone merged in float32, does not leave the output mixed (and unusable as one)."""
    if not is_float(code):
        return code
    if recipe.dtype is not None:
        return _OUT_DTYPE_CODES[recipe.dtype]
    return common_float((code, merged)) if merged is not None else code


def plan(
    recipe: Recipe | Mapping[str, Any] | str | Path, *, token: str | None = None, endpoint: str | None = None
) -> MergePlan:
    """Read headers only and decide, for every tensor, how the output gets it.

    Args:
        recipe: a ``Recipe``; the dict a recipe file holds; or the path of a recipe file (hubmerge or
            FusionBench YAML).
        token: Hub token for private inputs (never logged).
        endpoint: the Hub to read repos from (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        A ``MergePlan``; its inputs stay open until ``execute`` finishes (or ``close_plan``).

    Raises:
        PlanError: tensors missing, shapes or dtype kinds that disagree, unknown dtypes, target
            prefixes that match nothing — every offending tensor is listed in one error.
        WeightsError: corrupt or missing files. HubError: unreachable or unknown repos.

    Example:
        >>> merge_plan = plan("recipe.yaml")
        >>> merge_plan.bytes_to_read
    """
    recipe = _as_recipe(recipe)
    method = get_method(recipe.method)
    opened = _open_inputs(recipe, token, endpoint)
    try:
        inputs: list[InputModel] = []
        for label, ref, role, entry, source in opened:
            inputs.append(InputModel(label, ref, role, entry, open_weights(source), _read_config(source)))
        return _plan_from_inputs(recipe, method, inputs)
    except BaseException:
        for *_, source in opened:
            source.close()
        raise


def _read_config(source: WeightSource) -> dict[str, Any] | None:
    if "config.json" not in source.list_files():
        return None
    if not source.owns("config.json"):  # the output's config.json is made from it, and may be published
        raise PlanError(f"{source.where('config.json')} links to a file outside the model's folder, which would be "
                        "published with the merge; put the file itself there")
    try:
        config = json.loads(source.read_file("config.json"))
    except ValueError as exc:
        raise PlanError(f"{source.where('config.json')} is not valid JSON ({exc})") from None
    except RecursionError:  # deeply nested arrays/objects: json.loads recurses per level
        raise PlanError(f"{source.where('config.json')} nests too deeply to be a model config") from None
    if not isinstance(config, dict):
        raise PlanError(f"{source.where('config.json')} is not a JSON object")
    return config


def _detect_family(inputs: Sequence[InputModel]) -> Family | None:
    """The inputs' common family, or None when none of them is of a known family (a generic merge).

    Raises:
        PlanError: the inputs are of different families, or only some are of a known one.
    """
    found: dict[str, Family | None] = {}
    for model in inputs:
        try:
            found[model.label] = detect_family(model.config, model.weights.tensors, where=model.label)
        except UnsupportedArchitectureError:
            found[model.label] = None
    names = {family.name if family else None for family in found.values()}
    if len(names) > 1:
        raise PlanError(
            "the inputs are of different model families: "
            + ", ".join(f"{label}={family.name if family else 'unknown'}" for label, family in found.items())
            + ". Merge fine-tunes of one base model."
        )
    family = next(iter(found.values()))
    if family is None:
        log.info("the inputs are of no known model family: merging the recipe's target_modules, or everything")
    return family


def _head_tensors(
    inputs: Sequence[InputModel], index: int, names: Sequence[str], family: Family | None,
    decision: HeadDecision | None, recipe: Recipe, merged: str | None,
) -> list[TensorPlan]:
    """The tensors a task keeps, as the head decision says: copied, reordered or re-initialised; floats in
    the dtype of the ``merged`` tensors where that holds them (see ``_out_dtype``)."""
    model = inputs[index]
    out = []
    if decision is not None and decision.reinitialized and family is not None:
        fan_in = next((m.weights.tensors[family.head_weight].info.shape[1] for m in inputs
                       if family.head_weight in m.weights.tensors), None)
        if fan_in is None:
            raise PlanError(f"no input has a '{family.head_weight}' tensor to size a new head for {decision.task}")
        dtype = next(m.weights.tensors[family.head_weight].info.dtype for m in inputs
                     if family.head_weight in m.weights.tensors)
        classes = len(decision.labels)
        seed = head_seed(decision.task)
        names = [n for n in names if not family.is_head(n)]
        out += [
            TensorPlan(family.head_weight, "init", (classes, fan_in), _out_dtype(dtype, recipe, merged), (), init_seed=seed,
                       init_fan_in=fan_in),
            TensorPlan(family.head_bias, "init", (classes,), _out_dtype(dtype, recipe, merged), (), init_seed=seed + 1,
                       init_fan_in=fan_in),
        ]
    for name in _layout_order(model.weights, names):
        info = model.weights.tensors[name].info
        if DTYPES[info.dtype].torch_name is None:
            raise UnsupportedDtypeError(name, info.dtype, model.label)
        rows = decision.rows if decision is not None and family is not None and family.is_head(name) else None
        out.append(TensorPlan(name, "copy", info.shape, _out_dtype(info.dtype, recipe, merged), (index,), rows=rows))
    return out


def _plan_from_inputs(recipe: Recipe, method: MergeMethod, inputs: list[InputModel]) -> MergePlan:
    base_index = 0 if recipe.base_model is not None else None
    model_indices = [i for i, m in enumerate(inputs) if m.role == "model"]
    default_task = recipe.resolved_default_task
    default_index = next(
        (i for i in model_indices if inputs[i].entry and inputs[i].entry.task == default_task), model_indices[0]
    )
    files_index = base_index if base_index is not None else model_indices[0]
    buffer_source = base_index if base_index is not None else model_indices[0]
    uses_base = method.accepts_base and base_index is not None
    merge_readers = tuple(([base_index] if uses_base and base_index is not None else []) + model_indices)

    family = _detect_family(inputs)
    prefixes = _merged_prefixes(recipe, family)
    all_names = {name for m in inputs for name in m.weights.tensors}
    target = sorted(n for n in all_names if _in_targets(n, prefixes))
    if prefixes and not target:
        roots = sorted({n.split(".")[0] for n in all_names})
        raise PlanError(
            f"target_modules {list(prefixes)} match no tensor. Tensor names start with: {', '.join(roots[:20])}."
        )

    missing: dict[str, list[str]] = {}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    kinds: dict[str, dict[str, str]] = {}
    tensors: list[TensorPlan] = []
    for name in target:
        infos = {inputs[i].label: inputs[i].weights.tensors.get(name) for i in merge_readers}
        if buffer_source not in merge_readers:
            infos[inputs[buffer_source].label] = inputs[buffer_source].weights.tensors.get(name)
        absent = [label for label, loc in infos.items() if loc is None]
        if absent:
            missing[name] = absent
            continue
        present = {label: loc.info for label, loc in infos.items() if loc is not None}
        if len({i.shape for i in present.values()}) > 1:
            shapes[name] = {label: i.shape for label, i in present.items()}
        if len({is_float(i.dtype) for i in present.values()}) > 1:
            kinds[name] = {label: i.dtype for label, i in present.items()}
        for label, info in present.items():
            if DTYPES[info.dtype].torch_name is None or DTYPES[info.dtype].kind == "complex":
                raise UnsupportedDtypeError(name, info.dtype, label)
    if missing:
        raise MissingTensorError(missing)
    if shapes:
        roots = {name.split(".")[0] for name in target} - {name.split(".")[0] for name in shapes}
        raise ShapeMismatchError(shapes, suggestion=sorted(roots))
    if kinds:
        raise DtypeMismatchError(kinds)

    layout = inputs[default_index].weights
    in_layout = [n for n in target if n in layout.tensors]
    ordered = _layout_order(layout, in_layout) + sorted(set(target) - set(in_layout))
    for name in ordered:
        info = inputs[buffer_source].weights.tensors[name].info
        if is_integer(info.dtype):
            tensors.append(TensorPlan(name, "copy", info.shape, info.dtype, (buffer_source,)))
            continue
        averaged = method.accepts_base and is_running_statistic(name)  # see hubmerge.vision.families: statistics
        readers = tuple(model_indices) if averaged else merge_readers
        first = inputs[readers[0]].weights.tensors[name].info
        out_dtype = _out_dtype(common_float(inputs[i].weights.tensors[name].info.dtype for i in readers), recipe)
        tensors.append(TensorPlan(name, "average" if averaged else "merge", first.shape, out_dtype, readers))

    merged_floats = {t.out_dtype for t in tensors if t.action != "copy"}
    merged = merged_floats.pop() if len(merged_floats) == 1 else None
    heads: list[HeadPlan] = []
    skipped: list[tuple[str, str]] = []
    if prefixes:
        for i, model in enumerate(inputs):
            own = [n for n in model.weights.tensors if not _in_targets(n, prefixes)]
            task = model.entry.task if model.entry is not None else None
            decision = None
            if family is not None and task is not None:
                weight = model.weights.tensors.get(family.head_weight)
                decision = decide_head(
                    task, head_rows=weight.info.shape[0] if weight is not None else 0, config=model.config,
                    dataset=model.entry.dataset if model.entry is not None else None,
                )
            copies = _head_tensors(inputs, i, own, family, decision, recipe, merged)
            if i == default_index:
                tensors.extend(copies)
            if task is not None and copies:
                heads.append(HeadPlan(task, i, tuple(copies), decision))
            elif i != default_index:
                skipped.extend((model.label, c.name) for c in copies)
    return MergePlan(
        recipe=recipe,
        method=method,
        inputs=tuple(inputs),
        tensors=tuple(tensors),
        heads=tuple(heads),
        skipped=tuple(skipped),
        default_input=default_index,
        files_input=files_index,
        base_input=base_index,
        family=family,
    )


def close_plan(merge_plan: MergePlan) -> None:
    """Close every input's source (files, HTTP sessions)."""
    for model in merge_plan.inputs:
        model.weights.source.close()


# ---------------------------------------------------------------------------- execute helpers


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else CPU; ``cuda[:N]`` and ``mps`` must exist."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise RecipeError(f"unknown device '{device}'; use auto, cpu or cuda[:N]", field="device") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError("CUDA was asked for but this machine has no usable CUDA device", field="device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RecipeError(
                f"cuda:{resolved.index} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)",
                field="device",
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("mps (an Apple GPU) was asked for but this machine has none usable", field="device")
    return resolved


def _torch_out_dtype(code: str) -> torch.dtype:
    from .weights.dtypes import torch_dtype

    dtype = torch_dtype(code)
    assert dtype is not None
    return dtype


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _Merger:
    """Runs the method on one group of tensors at a time, on the device, in the plan's working dtype."""

    def __init__(self, merge_plan: MergePlan, device: torch.device) -> None:
        import torch

        from .weights.buffers import SHARED_POOL  # numpy: not needed to plan

        self.torch = torch
        self.pool = SHARED_POOL
        self.plan = merge_plan
        self.device = device
        self.method = merge_plan.method
        recipe = merge_plan.recipe
        self.params = dict(recipe.parameters)
        entries = [m.entry for m in merge_plan.inputs if m.role == "model"]
        weights = [e.weight for e in entries if e is not None]
        self.model_weights: list[float] | None = (
            [float(w) for w in weights if w is not None] if weights and all(w is not None for w in weights) else None
        )
        self.linear = (
            self.method.linear(len(entries), self.model_weights, self.params) if self.method.linear else None
        )
        self.model_indices = [i for i, m in enumerate(merge_plan.inputs) if m.role == "model"]
        self.mean_share = 1.0 / len(self.model_indices)  # each fine-tune's share of an averaged statistic
        self.dtype = getattr(torch, merge_plan.working_dtype)

    def working(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.device, dtype=self.dtype, non_blocking=True)

    def buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised working tensor; on the CPU from the reused pool, as fresh memory costs page faults."""
        if self.device.type != "cpu":
            return self.torch.empty(shape, dtype=self.dtype, device=self.device)
        return self.pool.take(math.prod(shape) * self.dtype.itemsize).view(self.dtype).reshape(shape)

    def linear_group(self, group: list[TensorPlan], reads: Iterator[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
        """Running sum: every input's tensors are folded in and dropped as soon as they arrive."""
        assert self.linear is not None
        torch = self.torch
        anchored = self.linear.anchored and self.plan.base_input is not None
        coefficient = dict(zip(self.model_indices, self.linear.coefficients))
        out: dict[str, torch.Tensor] = {}
        anchors: dict[str, torch.Tensor] = {}
        scratch: dict[str, torch.Tensor] = {}  # one task vector at a time, reused across inputs
        merged = [t for t in group if t.action == "merge"]
        averaged = [t for t in group if t.action == "average"]
        for index, tensors in reads:
            for t in group:
                if t.action == "copy" and t.readers[0] == index:
                    out[t.name] = tensors[t.name]
            if index in coefficient:
                for t in averaged:
                    self.fold(out, t, tensors[t.name], self.mean_share)
            if not merged or index not in coefficient and not (anchored and index == self.plan.base_input):
                continue
            for t in merged:
                value = self.working(tensors[t.name])
                if anchored and index == self.plan.base_input:
                    anchors[t.name] = value
                    out[t.name] = self.buffer(t.shape).copy_(value)
                elif anchored:
                    if t.name not in scratch:
                        scratch[t.name] = self.buffer(t.shape)
                    torch.sub(value, anchors[t.name], out=scratch[t.name])
                    out[t.name].add_(scratch[t.name], alpha=coefficient[index])
                else:
                    self.fold(out, t, value, coefficient[index])
            del tensors
        return out

    def fold(self, out: dict[str, torch.Tensor], tensor: TensorPlan, value: torch.Tensor, coefficient: float) -> None:
        """Add ``coefficient * value`` to the running sum ``out[tensor.name]`` (started on first use)."""
        value = self.working(value)
        if tensor.name in out:
            out[tensor.name].add_(value, alpha=coefficient)
        else:
            out[tensor.name] = self.torch.mul(value, coefficient, out=self.buffer(tensor.shape))

    def gather_group(self, group: list[TensorPlan], reads: Iterator[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
        """Collect every input's tensors for the group, then call the method per tensor."""
        by_input = dict(reads)
        out: dict[str, torch.Tensor] = {}
        for t in group:
            if t.action == "init":
                continue
            if t.action == "copy":
                out[t.name] = by_input[t.readers[0]][t.name]
                continue
            if t.action == "average":
                for i in self.model_indices:
                    self.fold(out, t, by_input[i][t.name], self.mean_share)
                continue
            models = [self.working(by_input[i][t.name]) for i in self.model_indices]
            base = self.working(by_input[self.plan.base_input][t.name]) if self.plan.base_input in t.readers else None
            kwargs: dict[str, Any] = dict(self.params)
            if self.method.accepts_base:
                kwargs["base"] = base
            if self.method.uses_weights:
                kwargs["weights"] = self.model_weights
            if self.method.needs_generator:
                kwargs["generator"] = self.torch.Generator().manual_seed(_seed_for(int(self.params["seed"]), t.name))
            out[t.name] = self.method.fn(models, **kwargs)
        return out


def _check_finite(merge_plan: MergePlan, tensor: TensorPlan, value: torch.Tensor) -> None:
    import torch

    if not value.is_floating_point() or math.isfinite(float(value.sum(dtype=torch.float32))):
        return  # a NaN/Inf anywhere makes the sum non-finite; one pass, no temporary mask
    if bool(torch.isfinite(value).all()):
        return  # finite values whose float32 sum overflowed
    from .weights.reader import read_tensors

    culprits = []
    for i in tensor.readers:
        model = merge_plan.inputs[i]
        original = read_tensors(model.weights, [tensor.name])[tensor.name]
        if original.is_floating_point() and not bool(torch.isfinite(original.float()).all()):
            culprits.append(model.label)
    if not culprits:
        culprits = [f"the merge result ({merge_plan.method.name} overflowed the output dtype)"]
    raise NonFiniteTensorError(tensor.name, culprits)


def _copy_model_files(merge_plan: MergePlan, directory: Path) -> list[str]:
    """Processor and config files from the base (or first) model; config.json from the default task."""
    written: list[str] = []
    source = merge_plan.inputs[merge_plan.files_input].weights.source
    not_copied = {n.lower() for n in _NOT_COPIED}  # as a case-insensitive disk would name them too
    for name in source.list_files():
        if name.lower() in not_copied or name.endswith(_WEIGHT_SUFFIXES) or "/" in name or name.startswith("."):
            continue
        if not source.owns(name):
            log.warning("not copying %s: a link to a file outside the model's folder", source.where(name))
            continue
        if source.file_size(name) > _MAX_COPIED_FILE:
            log.info("not copying %s (larger than %d bytes)", source.where(name), _MAX_COPIED_FILE)
            continue
        (directory / name).write_bytes(source.read_file(name))
        written.append(name)
    config = _config_for(merge_plan, merge_plan.default_input)
    if config is not None:
        (directory / "config.json").write_text(config)
        if "config.json" not in written:
            written.append("config.json")
    return written


def _config_for(merge_plan: MergePlan, index: int) -> str | None:
    """The config an output part gets: the input's, with its task's labels and the output dtype."""
    model = merge_plan.inputs[index]
    config = dict(model.config) if model.config is not None else None
    family = merge_plan.family
    if config is None and family is not None and family.name == TORCHVISION_FAMILY:
        head = model.weights.tensors.get(family.head_weight)
        config = {
            "hubmerge_family": TORCHVISION_FAMILY,
            "architecture": torchvision_architecture(model.weights.tensors),
            "num_classes": head.info.shape[0] if head is not None else None,
        }
    if config is None:
        return None
    decision = next((h.decision for h in merge_plan.heads if h.model == index and h.decision is not None), None)
    if decision is not None:
        config = id2label_config(config, decision)
    # what transformers loads the weights as: the merged tensors' dtype, not the default input's
    written = merge_plan.merged_dtypes
    dtype = merge_plan.recipe.dtype or (written[0] if len(written) == 1 else None)
    if dtype is not None:
        if "dtype" in config or merge_plan.recipe.dtype is not None:
            config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _heads_index(merge_plan: MergePlan, directory: Path, files: Sequence[str]) -> str:
    """``hubmerge_heads.json``: the tasks, their heads and decisions, the family and the processor."""
    from .vision.processors import processor_info

    preprocessor = directory / "preprocessor_config.json"
    tasks = [
        TaskHead(
            task=head.task,
            model=str(merge_plan.inputs[head.model].ref.pinned(merge_plan.inputs[head.model].revision)),
            tensors=tuple(t.name for t in head.tensors),
            files=tuple(f for f in files if f.startswith(f"{HEADS_DIR}/{head.task}/")),
            decision=head.decision,
        )
        for head in merge_plan.heads
    ]
    index = heads_index(
        tasks,
        family=merge_plan.family,
        target_modules=merge_plan.target_modules,
        default_task=merge_plan.recipe.resolved_default_task,
        processor=processor_info(merge_plan.family,
                                 json.loads(preprocessor.read_text()) if preprocessor.is_file() else None),
        averaged_statistics=[t.name for t in merge_plan.tensors if t.action == "average"],
    )
    return json.dumps(index, indent=2) + "\n"


def _init_tensor(tensor: TensorPlan) -> torch.Tensor:
    """A new head tensor, initialised like ``nn.Linear`` (uniform in ±1/sqrt(fan_in)), seeded per task."""
    import torch

    assert tensor.init_seed is not None and tensor.init_fan_in is not None
    bound = 1.0 / math.sqrt(tensor.init_fan_in)
    generator = torch.Generator().manual_seed(tensor.init_seed)
    value = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
    return value.to(_torch_out_dtype(tensor.out_dtype))


# ---------------------------------------------------------------------------- execute


def execute(
    merge_plan: MergePlan,
    output: str | Path,
    *,
    device: str | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "5GB",
    workers: int | None = None,
    group_bytes: int = DEFAULT_GROUP_BYTES,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> MergeResult:
    """Merge as planned and write the output directory atomically.

    Args:
        merge_plan: from ``plan``.
        output: the directory to create (or replace, with ``overwrite``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; defaults to the recipe's.
        overwrite: replace an existing non-empty output.
        max_shard_size: e.g. ``"5GB"``; larger outputs are split into shards plus an index.
        workers: reader threads (default: 2 for local inputs, 8 when any input is on the Hub).
        group_bytes: output bytes merged per step; ``budget_bytes``: read bytes allowed ahead.
        on_progress: called with (bytes read so far, bytes to read in total).
        cancel: set it to stop; the output is then left as it was.

    Returns:
        ``MergeResult`` with the files written and timings.

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is false (checked before any read).
        OutputSpaceError: the output's disk has too little free space for it (checked before any read).
        NonFiniteTensorError: an input holds NaN/Inf in a merged tensor.
        WeightsError / HubError: reads failed after retries. CancelledError: ``cancel`` was set.
    """
    from .weights.behind import Behind
    from .weights.buffers import SHARED_POOL
    from .weights.prefetch import Job, prefetch
    from .weights.reader import Span, plan_spans, read_span, release_spans

    started = time.perf_counter()
    output = Path(output)
    try:
        check_output(output.absolute(), overwrite=overwrite, keep=merge_plan.recipe.local_paths)
        check_space(output.absolute(), merge_plan.bytes_to_write)
        torch_device = resolve_device(device or merge_plan.recipe.device)
        max_shard = parse_size(max_shard_size)
    except BaseException:  # refused before any read: the plan's files and connections go all the same
        close_plan(merge_plan)
        raise
    remote = any(m.weights.source.revision is not None for m in merge_plan.inputs)
    workers = workers or (8 if remote else 2)
    total = merge_plan.bytes_to_read
    done = 0
    progress_lock = threading.Lock()
    merger = _Merger(merge_plan, torch_device)

    def read_job(index: int, names: list[str]) -> Callable[[], tuple[int, dict[str, torch.Tensor], list[Span]]]:
        def run() -> tuple[int, dict[str, torch.Tensor], list[Span]]:
            nonlocal done
            if cancel is not None and cancel.is_set():
                raise CancelledError("the merge")
            weights = merge_plan.inputs[index].weights
            spans = plan_spans(weights, names)
            tensors: dict[str, torch.Tensor] = {}
            for span in spans:
                tensors.update(read_span(weights, span))
            with progress_lock:
                done += sum(weights.tensors[n].nbytes for n in names)
                if on_progress is not None:
                    on_progress(done, total)
            return index, tensors, spans

        return run

    def jobs_for(group: list[TensorPlan]) -> list[Job[tuple[int, dict[str, torch.Tensor], list[Span]]]]:
        """One read per input the group needs, the base first (a running sum starts from it)."""
        wanted: dict[int, list[str]] = {}
        for t in group:
            for i in t.readers:
                wanted.setdefault(i, []).append(t.name)
        return [
            Job(sum(merge_plan.inputs[i].weights.tensors[n].nbytes for n in wanted[i]), read_job(i, wanted[i]))
            for i in sorted(wanted, key=lambda i: (i != merge_plan.base_input, i))
        ]

    def finish(group: list[TensorPlan], merged: dict[str, torch.Tensor], consumed: list[tuple[int, list[Span]]],
               writer: ShardedWriter) -> None:
        """Cast, check and write one merged group, then let its input pages go (runs behind the merge)."""
        for t in group:
            value = _init_tensor(t) if t.action == "init" else merged.pop(t.name)
            if t.rows is not None:
                value = value.index_select(0, merger.torch.tensor(t.rows))
            out_dtype = _torch_out_dtype(t.out_dtype)
            if value.dtype != out_dtype:
                value = value.to(out_dtype)
            if t.action in ("merge", "average"):
                _check_finite(merge_plan, t, value)
            writer.write(t.name, value)
            del value
        for index, spans in consumed:
            release_spans(merge_plan.inputs[index].weights, spans)

    def stream(tensors: Sequence[TensorPlan], writer: ShardedWriter) -> None:
        # A running sum holds one group; other methods hold it once per input: keep their total the same.
        per_group = group_bytes if merger.linear is not None else max(group_bytes // len(merge_plan.inputs), 2**20)
        groups = pack_in_order(tensors, per_group, lambda t: t.out_bytes)
        group_jobs = [jobs_for(group) for group in groups]
        results = prefetch((job for jobs in group_jobs for job in jobs), workers=workers, max_bytes=budget_bytes)
        use_linear = merger.linear is not None
        with Behind() as behind:
            for group, jobs in zip(groups, group_jobs):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("the merge")
                count = len(jobs)
                consumed: list[tuple[int, list[Span]]] = []

                def reads(count: int = count) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
                    for _ in range(count):
                        index, tensors, spans = next(results)
                        consumed.append((index, spans))
                        yield index, tensors

                merged = merger.linear_group(group, reads()) if use_linear else merger.gather_group(group, reads())
                behind.submit(functools.partial(finish, group, merged, consumed, writer))
                del merged
        results.close()

    def write_part(directory: Path, tensors: Sequence[TensorPlan]) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        writer = ShardedWriter(
            directory,
            [OutputTensor(t.name, t.out_dtype, t.shape) for t in tensors],
            max_shard_size=max_shard,
            metadata={"merged_by": "hubmerge", "method": merge_plan.method.name},
        )
        try:
            stream(tensors, writer)
            return writer.close()
        finally:
            writer.abort()

    files: list[str] = []
    try:
        with atomic_output_dir(output, overwrite=overwrite) as tmp:
            files += write_part(tmp, merge_plan.tensors)
            for head in merge_plan.heads:
                head_dir = tmp / HEADS_DIR / head.task
                files += [f"{HEADS_DIR}/{head.task}/{f}" for f in write_part(head_dir, head.tensors)]
                config = _config_for(merge_plan, head.model)
                if config is not None:
                    (head_dir / "config.json").write_text(config)
                    files.append(f"{HEADS_DIR}/{head.task}/config.json")
            files += _copy_model_files(merge_plan, tmp)
            if merge_plan.heads:
                (tmp / HEADS_INDEX).write_text(_heads_index(merge_plan, tmp, files))
                files.append(HEADS_INDEX)
            pinned = merge_plan.recipe.with_revisions({m.ref: m.revision for m in merge_plan.inputs})
            (tmp / RECIPE_FILE).write_text(pinned.to_yaml())
            files.append(RECIPE_FILE)
    finally:
        close_plan(merge_plan)
        SHARED_POOL.clear()  # a long-lived process (the app) keeps no read buffers between merges
    return MergeResult(
        output=output,
        files=tuple(sorted(set(files))),
        bytes_read=done,
        bytes_written=merge_plan.bytes_to_write,
        seconds=time.perf_counter() - started,
        device=str(torch_device),
    )


def merge(
    recipe: Recipe | Mapping[str, Any] | str | Path,
    output: str | Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> MergeResult:
    """``plan`` then ``execute``: the whole merge in one call (see both for arguments and errors).

    Example:
        >>> from hubmerge import merge
        >>> merge("recipe.yaml", "out/merged")  # or a Recipe, or {"method": "ties", "models": [...], ...}
    """
    source = {} if isinstance(recipe, (Recipe, Mapping)) else {Path(recipe): "the recipe file"}
    recipe = _as_recipe(recipe)
    check_output(Path(output).absolute(), overwrite=overwrite, keep={**source, **recipe.local_paths})
    return execute(plan(recipe, token=token, endpoint=endpoint), output, overwrite=overwrite, **options)


def _as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """A recipe as ``plan`` and ``merge`` take it: a Recipe, the dict a recipe file holds, or its path."""
    if isinstance(recipe, Recipe):
        return recipe
    return Recipe.from_dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe)


def read_output_recipe(output: str | Path) -> Recipe:
    """The recipe a merged output records (every input pinned to its commit), once the output is whole:
    its card and a push describe it, so a head or shard deleted since the merge must not go unseen.

    Raises:
        RecipeError: ``output`` holds no ``hubmerge_recipe.yaml``: it is no output of a merge.
        ModelFilesNotFoundError: ``output`` is no folder, or a file its indexes name is missing.
    """
    path = Path(output) / RECIPE_FILE
    if not Path(output).is_dir():
        what = "is a file" if Path(output).exists() else "does not exist"
        raise ModelFilesNotFoundError(f"'{output}' {what}: give the folder `hubmerge merge` wrote", model=str(output))
    if not path.is_file():
        raise RecipeError(f"'{output}' holds no {RECIPE_FILE}; is it an output of `hubmerge merge`?")
    tasks = _json_object(Path(output) / HEADS_INDEX).get("tasks")
    if missing := _missing_output_files(Path(output), tasks):
        raise ModelFilesNotFoundError(
            f"'{output}' is incomplete: {listed(missing, 5)} {'is' if len(missing) == 1 else 'are'} missing "
            "(deleted since the merge?); merge it again, or restore them", model=str(output)
        )
    recipe = load_recipe(path)
    if isinstance(tasks, dict):
        recipe.check_heads(list(tasks), output)
    return recipe


def _json_object(path: Path) -> dict[str, Any]:
    """An output's index, or {} when it is absent or no JSON object: whoever reads it next refuses it in its
    own words."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _missing_output_files(directory: Path, tasks: object) -> list[str]:
    """The files an output's indexes name (each task's head, from ``tasks`` of its heads index; the weight
    shards) that are not there."""
    named = [str(f) for task in (tasks.values() if isinstance(tasks, dict) else ()) if isinstance(task, dict)
             for f in task.get("files", [])]
    if (directory / INDEX_FILE).is_file():
        weight_map = _json_object(directory / INDEX_FILE).get("weight_map")
        named += sorted({str(f) for f in weight_map.values()}) if isinstance(weight_map, dict) else []
    else:
        named.append(SINGLE_FILE)
    return [name for name in named if not (directory / name).is_file()]
