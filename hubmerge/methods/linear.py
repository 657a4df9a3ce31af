"""Plain averages of the fine-tuned weights (Model Soups, Wortsman et al. 2022)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MethodParameterError
from ._registry import LinearForm, register

if TYPE_CHECKING:
    import torch

__all__ = ["simple_average", "weighted_average"]

_SOUPS = "https://arxiv.org/abs/2203.05482"


def _uniform(n: int, weights: Sequence[float] | None, params: Mapping[str, Any]) -> LinearForm:
    return LinearForm(tuple([1.0 / n] * n), anchored=False)


def _normalised(weights: Sequence[float], normalize: bool) -> list[float]:
    values = [float(w) for w in weights]
    if not normalize:
        return values
    total = sum(values)
    if total == 0:
        raise MethodParameterError("weighted_average", "weights", "the model weights sum to 0; they cannot be normalised")
    return [w / total for w in values]


def _weighted(n: int, weights: Sequence[float] | None, params: Mapping[str, Any]) -> LinearForm:
    if weights is None:
        raise MethodParameterError("weighted_average", "weights", "give every model a 'weight'")
    return LinearForm(tuple(_normalised(weights, bool(params.get("normalize", True)))), anchored=False)


@register("simple_average", pretty_name="Simple average", paper=_SOUPS, linear=_uniform)
def simple_average(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The element-wise mean of the fine-tuned tensors ("uniform soup")."""
    import torch

    return torch.stack(list(tensors)).mean(dim=0)


@register(
    "weighted_average",
    pretty_name="Weighted average",
    paper=_SOUPS,
    help={"normalize": "divide the weights by their sum so that they add up to 1"},
    linear=_weighted,
    peer_methods={"linear": "mergekit's 'linear' is 'weighted_average' here, with each model's 'weight' on its entry."},
)
def weighted_average(
    tensors: Sequence[torch.Tensor], *, weights: Sequence[float], normalize: bool = True
) -> torch.Tensor:
    """Sum of ``weight_i * tensor_i`` using each model's recipe ``weight`` (normalised to sum 1 by default)."""
    import torch

    if len(weights) != len(tensors):
        raise MethodParameterError("weighted_average", "weights", f"{len(weights)} weights for {len(tensors)} models")
    coefficients = torch.tensor(_normalised(weights, normalize), dtype=tensors[0].dtype, device=tensors[0].device)
    return torch.tensordot(coefficients, torch.stack(list(tensors)), dims=1)
