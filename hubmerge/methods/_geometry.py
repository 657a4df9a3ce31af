"""Angles between whole tensors, for the methods that measure them (SLERP, Model Stock).

Dot products and norms over millions of float32 entries drift (``Tensor.norm`` of 16M entries is off by
about 6e-4 here), enough to misjudge the angle between two nearly parallel tensors; they are summed in
float64 here, a slice at a time, so no float64 copy of a whole tensor is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["gram"]

_SLICE = 1 << 20  # entries per vector summed at a time: n * 8 MiB of float64


def gram(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The float64 matrix of every pairwise dot product of equal-length 1-D ``vectors``."""
    import torch

    out = torch.zeros((len(vectors), len(vectors)), dtype=torch.float64, device=vectors[0].device)
    for start in range(0, vectors[0].numel(), _SLICE):
        rows = torch.stack([v[start : start + _SLICE] for v in vectors]).to(torch.float64)
        out += rows @ rows.T
    return out
