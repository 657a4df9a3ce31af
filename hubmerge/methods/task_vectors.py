"""Task-vector methods: task arithmetic, TIES, DARE and Model Breadcrumbs as presets of one function.

A task vector is ``delta_i = finetuned_i - base``. Every method here is
``base + scaling_factor * combine(sparsify(weight_i * delta_i))``; the presets only choose how
deltas are sparsified (none, top-k by magnitude, random drop, outlier-and-tail trim) and combined
(plain sum, or TIES sign election with a disjoint sum or mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._registry import LinearForm, register

if TYPE_CHECKING:
    import torch

__all__ = ["breadcrumbs", "dare", "task_arithmetic", "ties"]

Sparsify = Literal["none", "magnitude", "random", "breadcrumbs"]
Combine = Literal["sum", "ties"]


def _kth_largest(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of a 1-D tensor of magnitudes (k >= 1), exactly.

    For float32 this is a two-pass radix select on the bit patterns (for non-negative floats the
    integer order is the float order): a histogram of the high 16 bits finds the bucket holding the
    k-th value, a histogram of that bucket's low 16 bits finds the value. Linear, and several times
    faster than ``kthvalue``'s selection; other dtypes use ``kthvalue``.
    """
    import torch

    if magnitude.dtype != torch.float32:
        return magnitude.kthvalue(magnitude.numel() - k + 1).values
    bits = magnitude.view(torch.int32)
    high = bits >> 16
    from_top = torch.bincount(high, minlength=1 << 15).flip(0).cumsum(0)
    index = int(torch.searchsorted(from_top, torch.tensor(k, device=from_top.device)))
    bucket = (1 << 15) - 1 - index
    above = int(from_top[index - 1]) if index > 0 else 0
    low_from_top = torch.bincount(bits[high == bucket] & 0xFFFF, minlength=1 << 16).flip(0).cumsum(0)
    low = (1 << 16) - 1 - int(torch.searchsorted(low_from_top, torch.tensor(k - above, device=from_top.device)))
    return torch.tensor((bucket << 16) | low, dtype=torch.int32, device=magnitude.device).view(torch.float32)


def _top_k_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly the ``k`` largest entries of a 1-D tensor; entries tying with the k-th go to lower indices."""
    import torch

    m = magnitude.numel()
    if k >= m:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    threshold = _kth_largest(magnitude, k)
    at_least = magnitude >= threshold
    if int(torch.count_nonzero(at_least)) == k:
        return at_least  # the usual case: no other entry ties with the k-th
    mask = magnitude > threshold
    ties = at_least & ~mask
    need = k - int(torch.count_nonzero(mask))
    return mask | (ties & (ties.cumsum(dim=0) <= need))


def _keep_count(fraction: float, m: int) -> int:
    return min(m, math.ceil(fraction * m - 1e-9))


def _sparsify_row(
    row: torch.Tensor,
    how: Sparsify,
    *,
    density: float,
    gamma: float,
    drop_rate: float,
    rescale: bool,
    generator: torch.Generator | None,
) -> None:
    """Zero out entries of one model's flattened task vector, in place."""
    import torch

    if how == "none":
        return
    m = row.shape[0]
    if how == "magnitude":
        row.mul_(_top_k_mask(row.abs(), _keep_count(density, m)))
    elif how == "breadcrumbs":
        magnitude = row.abs()
        outliers = _top_k_mask(magnitude, _keep_count(gamma, m))
        kept = _top_k_mask(magnitude, _keep_count(gamma + density, m))
        row.mul_(kept & ~outliers)
    else:  # random drop (DARE): drawn on the CPU, model after model, so CPU and GPU merges agree bit for bit
        keep = torch.rand(m, generator=generator, dtype=torch.float32) >= drop_rate
        row.mul_(keep.to(row.device))
        if rescale and drop_rate > 0:
            row.div_(1.0 - drop_rate)


def _combine(deltas: torch.Tensor, how: Combine, *, disjoint_merge: Literal["sum", "mean"]) -> torch.Tensor:
    """Sum the task vectors (rows), or TIES: elect a sign per entry, then merge the agreeing entries."""
    import torch

    if how == "sum":
        return deltas.sum(dim=0)
    elected = torch.sign(deltas.sum(dim=0))  # the sign with the larger total mass
    total = torch.zeros_like(elected)
    count = torch.zeros_like(elected) if disjoint_merge == "mean" else None
    for row in deltas:  # one model at a time: temporaries stay the size of one task vector
        agree = (row * elected) > 0  # same sign as elected, and not zero
        total.add_(row * agree)
        if count is not None:
            count.add_(agree)
    return total if count is None else total / count.clamp(min=1)


def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    weights: Sequence[float] | None,
    *,
    scaling_factor: float,
    sparsify: Sparsify = "none",
    combine: Combine = "sum",
    density: float = 1.0,
    gamma: float = 0.0,
    drop_rate: float = 0.0,
    rescale: bool = True,
    disjoint_merge: Literal["sum", "mean"] = "sum",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``base + scaling_factor * combine(sparsify(w_i * (t_i - base)))``, in the inputs' dtype.

    Task vectors are built one model at a time into one [n, m] buffer and sparsified in place, so
    the peak is that buffer plus one task vector's temporaries; the inputs are never written.
    """
    import torch

    flat_base = base.reshape(-1)
    deltas = torch.empty((len(tensors), flat_base.numel()), dtype=base.dtype, device=base.device)
    for i, tensor in enumerate(tensors):
        row = torch.sub(tensor.reshape(-1), flat_base, out=deltas[i])
        if weights is not None:
            row.mul_(float(weights[i]))
        _sparsify_row(row, sparsify, density=density, gamma=gamma, drop_rate=drop_rate, rescale=rescale,
                      generator=generator)
    merged = _combine(deltas, combine, disjoint_merge=disjoint_merge)
    return base + scaling_factor * merged.reshape(base.shape)


def _arithmetic_rule(n: int, weights: Sequence[float] | None, params: Mapping[str, Any]) -> LinearForm:
    scale = float(params["scaling_factor"])
    factors = weights if weights is not None else [1.0] * n
    return LinearForm(tuple(scale * float(w) for w in factors), anchored=True)


_SCALE_HELP = "multiplies the combined task vectors before they are added to the base"
_NONNEG = (0.0, None)
_FRACTION = (0.0, 1.0)
_LAMBDA = {
    "lambda": "mergekit's 'lambda' is 'scaling_factor' here.",
    "int8_mask": "mergekit's 'int8_mask' saves memory there; hubmerge merges tensor by tensor and needs no such switch.",
}


@register(
    "task_arithmetic",
    pretty_name="Task Arithmetic",
    paper="https://arxiv.org/abs/2212.04089",
    bounds={"scaling_factor": _NONNEG},
    help={"scaling_factor": _SCALE_HELP},
    peer_names=_LAMBDA,
    linear=_arithmetic_rule,
)
def task_arithmetic(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float] | None = None,
    scaling_factor: float = 0.3,
) -> torch.Tensor:
    """Editing models with task arithmetic (Ilharco et al. 2023): ``base + λ Σ w_i (t_i − base)``."""
    return merge_task_vectors(tensors, base, weights, scaling_factor=scaling_factor)


@register(
    "ties",
    pretty_name="TIES-Merging",
    paper="https://arxiv.org/abs/2306.01708",
    bounds={"density": _FRACTION, "scaling_factor": _NONNEG},
    help={
        "density": "fraction of each task vector kept, by magnitude (the ceil(density x size) largest entries)",
        "scaling_factor": _SCALE_HELP,
        "disjoint_merge": "how agreeing entries are combined after sign election: their sum, or their mean",
    },
    peer_names={
        **_LAMBDA,
        "threshold": "FusionBench's 'threshold' is 'density' here, as a fraction: threshold 20 is density 0.2.",
        "merge_func": "FusionBench's 'merge_func' is 'disjoint_merge' here.",
        "normalize": "mergekit's 'normalize' (divide by the weights of the models that agree) is closest to "
        "'disjoint_merge: mean' here.",
    },
    peer_methods={"ties_merging": "FusionBench's 'ties_merging' is 'ties' here."},
)
def ties(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float] | None = None,
    density: float = 0.2,
    scaling_factor: float = 0.3,
    disjoint_merge: Literal["sum", "mean"] = "sum",
) -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023): trim each task vector to its top entries, elect a sign per
    entry by total mass, then merge only the entries that agree with it (an entry whose masses cancel
    exactly elects no sign and keeps the base's value)."""
    return merge_task_vectors(
        tensors, base, weights, scaling_factor=scaling_factor, sparsify="magnitude", combine="ties",
        density=density, disjoint_merge=disjoint_merge,
    )


@register(
    "dare",
    pretty_name="DARE",
    paper="https://arxiv.org/abs/2311.03099",
    bounds={"drop_rate": (0.0, 0.999), "scaling_factor": _NONNEG},
    help={
        "drop_rate": "probability that each task-vector entry is dropped",
        "rescale": "divide kept entries by (1 - drop_rate) so each task vector keeps its expected value",
        "seed": "random seed; the same seed gives the same merge on any device and sharding",
        "combine": "linear: sum the dropped task vectors; ties: TIES sign election and disjoint merge",
        "disjoint_merge": "with combine=ties: sum or mean of the agreeing entries",
        "scaling_factor": _SCALE_HELP,
    },
    peer_names={
        **_LAMBDA,
        "sparsity_ratio": "FusionBench's 'sparsity_ratio' is 'drop_rate' here.",
        "density": "mergekit's 'density' is 1 - 'drop_rate' here.",
    },
    peer_methods={
        "dare_linear": "mergekit's 'dare_linear' is 'dare' here (its default 'combine: linear').",
        "dare_ties": "mergekit's 'dare_ties' is 'dare' with 'combine: ties' here.",
        "dare/task_arithmetic": "FusionBench's 'dare/task_arithmetic' (DareTaskArithmetic) is 'dare' here; its "
        "'dare/ties_merging' is 'dare' with 'combine: ties' when its threshold is 100 (no trim after the drop).",
    },
)
def dare(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    drop_rate: float = 0.5,
    rescale: bool = True,
    seed: int = 0,
    combine: Literal["linear", "ties"] = "linear",
    disjoint_merge: Literal["sum", "mean"] = "sum",
    scaling_factor: float = 0.3,
) -> torch.Tensor:
    """DARE, drop and rescale (Yu et al. 2024): drop each task-vector entry with probability p, rescale
    the rest by 1/(1-p), then combine linearly (DARE-linear) or with TIES (DARE-TIES)."""
    return merge_task_vectors(
        tensors, base, weights, scaling_factor=scaling_factor, sparsify="random",
        combine="sum" if combine == "linear" else "ties", drop_rate=drop_rate, rescale=rescale,
        disjoint_merge=disjoint_merge, generator=generator,
    )


@register(
    "breadcrumbs",
    pretty_name="Model Breadcrumbs",
    paper="https://arxiv.org/abs/2312.06795",
    bounds={"density": _FRACTION, "gamma": _FRACTION, "scaling_factor": _NONNEG},
    help={
        "density": "fraction of each task vector kept after the outliers (by magnitude)",
        "gamma": "fraction of the largest-magnitude entries dropped as outliers",
        "scaling_factor": _SCALE_HELP,
    },
    peer_names=_LAMBDA,
    peer_methods={
        "breadcrumbs_ties": "mergekit's 'breadcrumbs_ties' has no equivalent here: 'breadcrumbs' sums the trimmed "
        "task vectors without TIES sign election.",
    },
)
def breadcrumbs(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float] | None = None,
    density: float = 0.9,
    gamma: float = 0.01,
    scaling_factor: float = 0.3,
) -> torch.Tensor:
    """Model Breadcrumbs (Davari & Belilovsky 2024): per task vector, drop the top ``gamma`` outliers
    and the small tail, keep the ``density`` fraction in between, then sum."""
    return merge_task_vectors(
        tensors, base, weights, scaling_factor=scaling_factor, sparsify="breadcrumbs", density=density, gamma=gamma
    )
