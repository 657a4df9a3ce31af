"""Task-vector methods: task arithmetic, TIES, DARE and Model Breadcrumbs as presets of one function.

A task vector is ``delta_i = finetuned_i - base``. Every method here is
``base + scaling_factor * combine(sparsify(weight_i * delta_i))``; the presets only choose how
deltas are sparsified (none, top-k by magnitude, random drop, outlier-and-tail trim) and combined
(plain sum, or TIES sign election with a disjoint sum or mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ._registry import LinearForm, register

__all__ = ["breadcrumbs", "dare", "task_arithmetic", "ties"]

Sparsify = Literal["none", "magnitude", "random", "breadcrumbs"]
Combine = Literal["sum", "ties"]


def _top_k_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of ``magnitude`` [n, m]: exactly the ``k`` largest entries; ties go to lower indices.

    ``kthvalue`` finds the threshold in linear time; entries equal to it are admitted in index order
    until each row has exactly ``k``.
    """
    rows, m = magnitude.shape
    if k >= m:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    threshold = magnitude.kthvalue(m - k + 1, dim=1, keepdim=True).values
    mask = magnitude > threshold
    ties = magnitude == threshold
    need = k - mask.sum(dim=1, keepdim=True)
    if bool((ties.sum(dim=1, keepdim=True) == need).all()):
        return mask | ties
    return mask | (ties & (ties.cumsum(dim=1) <= need))


def _keep_count(fraction: float, m: int) -> int:
    return min(m, math.ceil(fraction * m - 1e-9))


def _sparsify(
    deltas: torch.Tensor,
    how: Sparsify,
    *,
    density: float,
    gamma: float,
    drop_rate: float,
    rescale: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Zero out entries of each model's flattened delta (rows of ``deltas`` [n, m])."""
    if how == "none":
        return deltas
    m = deltas.shape[1]
    if how == "magnitude":
        return deltas * _top_k_mask(deltas.abs(), _keep_count(density, m))
    if how == "breadcrumbs":
        magnitude = deltas.abs()
        outliers = _top_k_mask(magnitude, _keep_count(gamma, m))
        kept = _top_k_mask(magnitude, _keep_count(gamma + density, m)) & ~outliers
        return deltas * kept
    # random drop (DARE): masks drawn on the CPU so CPU and GPU merges agree bit for bit
    keep = torch.rand(deltas.shape, generator=generator, dtype=torch.float32) >= drop_rate
    kept = deltas * keep.to(deltas.device)
    return kept / (1.0 - drop_rate) if rescale and drop_rate > 0 else kept


def _combine(deltas: torch.Tensor, how: Combine, *, disjoint_merge: Literal["sum", "mean"]) -> torch.Tensor:
    if how == "sum":
        return deltas.sum(dim=0)
    elected = torch.sign(deltas.sum(dim=0))  # TIES: the sign with the larger total mass
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    total = (deltas * agree).sum(dim=0)
    if disjoint_merge == "sum":
        return total
    return total / agree.sum(dim=0).clamp(min=1)


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
    """``base + scaling_factor * combine(sparsify(w_i * (t_i - base)))``, computed in the inputs' dtype."""
    deltas = torch.stack([t - base for t in tensors]).reshape(len(tensors), -1)
    if weights is not None:
        deltas = deltas * torch.tensor(list(weights), dtype=deltas.dtype, device=deltas.device).unsqueeze(1)
    deltas = _sparsify(
        deltas, sparsify, density=density, gamma=gamma, drop_rate=drop_rate, rescale=rescale, generator=generator
    )
    merged = _combine(deltas, combine, disjoint_merge=disjoint_merge)
    return base + scaling_factor * merged.reshape(base.shape)


def _arithmetic_rule(n: int, weights: Sequence[float] | None, params: Mapping[str, Any]) -> LinearForm:
    scale = float(params["scaling_factor"])
    factors = weights if weights is not None else [1.0] * n
    return LinearForm(tuple(scale * float(w) for w in factors), anchored=True)


_SCALE_HELP = "multiplies the combined task vectors before they are added to the base"
_NONNEG = (0.0, None)
_FRACTION = (0.0, 1.0)


@register(
    "task_arithmetic",
    pretty_name="Task Arithmetic",
    paper="https://arxiv.org/abs/2212.04089",
    bounds={"scaling_factor": _NONNEG},
    help={"scaling_factor": _SCALE_HELP},
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
    entry by total mass, then merge only the entries that agree with it."""
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
