"""Spherical linear interpolation between two models (Shoemake 1985), as popularised for model merging."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._geometry import gram
from ._registry import register

if TYPE_CHECKING:
    import torch

__all__ = ["slerp"]

# Above this |cos|, the two tensors are (anti)parallel and slerp degenerates: interpolate linearly.
COLINEAR = 1.0 - 1e-6


@register(
    "slerp",
    pretty_name="SLERP",
    paper="https://dl.acm.org/doi/10.1145/325165.325242",
    min_models=2,
    max_models=2,
    bounds={"t": (0.0, 1.0)},
    help={"t": "0 gives the first model, 1 the second; in between follows the arc between them"},
)
def slerp(tensors: Sequence[torch.Tensor], *, t: float = 0.5) -> torch.Tensor:
    """Interpolate along the great circle between the two flattened tensors (their directions), with
    the coefficients applied to the tensors themselves; linear when they are colinear or zero."""
    import torch

    a, b = tensors
    (aa, ab), (_, bb) = gram([a.reshape(-1), b.reshape(-1)]).tolist()
    if aa == 0 or bb == 0:
        return torch.lerp(a, b, t)
    cos = max(-1.0, min(1.0, ab / math.sqrt(aa * bb)))
    if abs(cos) > COLINEAR:
        return torch.lerp(a, b, t)
    omega = math.acos(cos)
    sin_omega = math.sin(omega)
    return (math.sin((1 - t) * omega) / sin_omega) * a + (math.sin(t * omega) / sin_omega) * b
