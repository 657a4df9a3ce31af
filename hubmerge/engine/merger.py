"""The device side of a merge: the method run on one group of tensors at a time, in the working dtype."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import NonFiniteTensorError, RecipeError
from .plans import MergePlan, TensorPlan

if TYPE_CHECKING:
    import torch
    from torch import Tensor  # where a function's local ``torch`` (imported lazily) hides the module


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
            raise RecipeError(f"CUDA was asked for but {_no_cuda()}; {_INSTEAD}", field="device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RecipeError(
                f"cuda:{resolved.index} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}",
                field="device",
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RecipeError(f"mps (an Apple GPU) was asked for but this machine has none usable; {_INSTEAD}",
                          field="device")
    return resolved


# What to ask for instead of a device the machine lacks, where it is asked for.
_INSTEAD = "use cpu, or auto (a GPU where there is one): --device cpu, or `device: auto` in the recipe"


def _no_cuda() -> str:
    """Why torch has no CUDA here: a CPU-only build, or a CUDA build that finds no GPU."""
    import torch

    if torch.version.cuda is None:
        return "this torch is a build without CUDA (a CPU-only wheel)"
    return (f"this torch (built for CUDA {torch.version.cuda}) finds no usable GPU: none here, no NVIDIA driver, "
            "or CUDA_VISIBLE_DEVICES hides it")


def torch_out_dtype(code: str) -> torch.dtype:
    from ..weights.dtypes import torch_dtype

    dtype = torch_dtype(code)
    assert dtype is not None
    return dtype


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Merger:
    """Runs the method on one group of tensors at a time, on the device, in the plan's working dtype."""

    def __init__(self, merge_plan: MergePlan, device: torch.device) -> None:
        import torch

        from ..weights.buffers import SHARED_POOL  # numpy: not needed to plan

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
        out: dict[str, Tensor] = {}
        anchors: dict[str, Tensor] = {}
        scratch: dict[str, Tensor] = {}  # one task vector at a time, reused across inputs
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


def check_finite(merge_plan: MergePlan, tensor: TensorPlan, value: torch.Tensor) -> None:
    import torch

    if not value.is_floating_point() or math.isfinite(float(value.sum(dtype=torch.float32))):
        return  # a NaN/Inf anywhere makes the sum non-finite; one pass, no temporary mask
    if bool(torch.isfinite(value).all()):
        return  # finite values whose float32 sum overflowed
    from ..weights.reader import read_tensors

    culprits = []
    for i in tensor.readers:
        model = merge_plan.inputs[i]
        original = read_tensors(model.weights, [tensor.name])[tensor.name]
        if original.is_floating_point() and not bool(torch.isfinite(original.float()).all()):
            culprits.append(model.label)
    if culprits:
        raise NonFiniteTensorError(tensor.name, culprits)
    narrow = torch.finfo(value.dtype).max < torch.finfo(torch.float32).max  # float32 would hold it: say so
    result = f"the merge result ({merge_plan.method.name} overflowed the output dtype)"
    written = str(value.dtype).removeprefix("torch.")
    raise NonFiniteTensorError(tensor.name, [result], overflowed=written if narrow else None)


def cast_copy(merge_plan: MergePlan, tensor: TensorPlan, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copied tensor (a head, a tensor outside the merge) in the output's ``dtype``: values past its range (a
    recipe's float16) are an error, as in a merged tensor, not Inf written in silence. An input's own NaN/Inf
    is copied as it is: the copy makes nothing worse."""
    import torch

    cast = value.to(dtype)
    if not cast.is_floating_point() or math.isfinite(float(cast.sum(dtype=torch.float32))):
        return cast
    if bool((torch.isfinite(cast) | ~torch.isfinite(value)).all()):
        return cast  # finite values whose float32 sum overflowed, or the input's own NaN/Inf
    written = str(dtype).removeprefix("torch.")
    label = merge_plan.inputs[tensor.readers[0]].label
    raise NonFiniteTensorError(tensor.name, [f"{label}'s tensor cast to {written}"], overflowed=written)


def init_tensor(tensor: TensorPlan) -> torch.Tensor:
    """A new head tensor, initialised like ``nn.Linear`` (uniform in ±1/sqrt(fan_in)), seeded per task."""
    import torch

    assert tensor.init_seed is not None and tensor.init_fan_in is not None
    bound = 1.0 / math.sqrt(tensor.init_fan_in)
    generator = torch.Generator().manual_seed(tensor.init_seed)
    value = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
    return value.to(torch_out_dtype(tensor.out_dtype))

