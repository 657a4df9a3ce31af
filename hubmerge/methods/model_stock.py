"""Model Stock (Jang et al. 2024): how far to move from the base towards the average, from geometry alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._geometry import gram
from ._registry import register

if TYPE_CHECKING:
    import torch

__all__ = ["model_stock"]


@register(
    "model_stock",
    pretty_name="Model Stock",
    paper="https://arxiv.org/abs/2403.19522",
    min_models=2,
)
def model_stock(tensors: Sequence[torch.Tensor], *, base: torch.Tensor) -> torch.Tensor:
    """``t * mean(tensors) + (1 - t) * base`` with ``t = N cos / (1 + (N - 1) cos)``.

    ``cos`` is the mean pairwise cosine between the task vectors of this tensor. Pairs with a zero
    task vector count as orthogonal (cos 0), and ``t`` is clamped to [0, 1]: task vectors pointing
    apart give the base rather than an extrapolation.
    """
    import torch

    n = len(tensors)
    dots = gram([(t - base).reshape(-1) for t in tensors])
    norms = dots.diagonal().sqrt()
    lengths = torch.outer(norms, norms)
    cosines = torch.where(lengths > 0, dots / lengths.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    cos = float(cosines.sum() - cosines.diagonal().sum()) / (n * (n - 1))
    t = min(max(n * cos / (1 + (n - 1) * cos), 0.0), 1.0) if cos > 0 else 0.0
    return t * torch.stack(list(tensors)).mean(dim=0) + (1 - t) * base
