"""Turn byte ranges into torch tensors, coalescing neighbouring tensors into one read.

Why coalesce: a ConvNeXt checkpoint holds hundreds of small tensors (norms, biases) next to each
other; one read per neighbourhood instead of one per tensor saves syscalls locally and round trips
over HTTP. A source that can map its files gives tensors that are views of the page cache (no
copy); otherwise each read goes straight into a pooled buffer (``buffers``): one copy from the socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UnsupportedDtypeError
from .buffers import SHARED_POOL
from .dtypes import torch_dtype
from .index import ModelWeights, TensorLocation

__all__ = ["Span", "plan_spans", "read_span", "read_tensors", "release_spans"]

DEFAULT_MAX_SPAN = 32 * 1024 * 1024


@dataclass(frozen=True)
class Span:
    """A contiguous byte range of one file holding one or more whole tensors."""

    file: str
    offset: int
    length: int
    members: tuple[tuple[str, TensorLocation], ...]


def plan_spans(weights: ModelWeights, names: Sequence[str], *, max_span: int = DEFAULT_MAX_SPAN) -> list[Span]:
    """Group the tensors ``names`` of one model into contiguous reads of at most ``max_span`` bytes.

    A single tensor larger than ``max_span`` gets a span of its own.
    """
    located = sorted(((n, weights.tensors[n]) for n in names), key=lambda item: (item[1].file, item[1].offset))
    spans: list[Span] = []
    current: list[tuple[str, TensorLocation]] = []
    start = end = 0
    for name, loc in located:
        joins = current and loc.file == current[-1][1].file and loc.offset == end and end + loc.nbytes - start <= max_span
        if not joins:
            if current:
                spans.append(Span(current[0][1].file, start, end - start, tuple(current)))
            current, start = [], loc.offset
        current.append((name, loc))
        end = loc.offset + loc.nbytes
    if current:
        spans.append(Span(current[0][1].file, start, end - start, tuple(current)))
    return spans


def _as_tensor(buffer: torch.Tensor, start: int, loc: TensorLocation, where: str) -> torch.Tensor:
    dtype = torch_dtype(loc.info.dtype)
    if dtype is None:
        raise UnsupportedDtypeError(loc.info.name, loc.info.dtype, where)
    raw = buffer[start : start + loc.nbytes]
    if start % dtype.itemsize:
        raw = raw.clone()  # views need element alignment; rare in real checkpoints
    return raw.view(dtype).reshape(loc.info.shape)


def read_span(weights: ModelWeights, span: Span) -> dict[str, torch.Tensor]:
    """Read ``span`` with one ranged read (or map it); return a tensor per member (views of one buffer).

    Tensors from a mapped span must not be written to in place; callers copy before mutating.
    """
    mapped = weights.source.view(span.file, span.offset, span.length)
    if mapped is not None:
        buffer = torch.frombuffer(mapped, dtype=torch.uint8)
    else:
        buffer = SHARED_POOL.take(span.length)
        if span.length:
            weights.source.read_into(span.file, span.offset, memoryview(buffer.numpy()).cast("B"))
    where = weights.source.where(span.file)
    return {name: _as_tensor(buffer, loc.offset - span.offset, loc, where) for name, loc in span.members}


def release_spans(weights: ModelWeights, spans: Sequence[Span]) -> None:
    """Tell the source these spans are consumed (mapped pages can go)."""
    for span in spans:
        weights.source.release(span.file, span.offset, span.length)


def read_tensors(
    weights: ModelWeights, names: Sequence[str], *, max_span: int = DEFAULT_MAX_SPAN
) -> dict[str, torch.Tensor]:
    """Read the tensors ``names`` of one model, in as few ranged reads as their layout allows."""
    out: dict[str, torch.Tensor] = {}
    for span in plan_spans(weights, names, max_span=max_span):
        out.update(read_span(weights, span))
    return out
