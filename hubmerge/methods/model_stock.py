"""Model Stock (Jang et al. 2024): how far to move from the base towards the average, from geometry alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
    deltas = torch.stack([t - base for t in tensors]).reshape(n, -1)
    norms = deltas.norm(dim=1)
    unit = deltas / norms.clamp(min=torch.finfo(deltas.dtype).tiny).unsqueeze(1)
    gram = unit @ unit.T
    cos = (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))
    t = (n * cos / (1 + (n - 1) * cos)).clamp(0.0, 1.0) if bool(cos > 0) else cos.new_zeros(())
    return t * torch.stack(list(tensors)).mean(dim=0) + (1 - t) * base
