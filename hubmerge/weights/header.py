"""Parse and validate a safetensors header from its first bytes.

One pure parser serves local files and Hub files alike: the caller fetches the first bytes (a
``pread`` or an HTTP Range request) and hands them over together with the file size. Everything that
could make a later read wrong, huge or endless is refused here, before any weight byte moves:
lengths past the end of the file, unknown dtypes, sizes that disagree with shapes, overlapping or
gapped offsets, duplicate names, absurd header sizes.

Layout: ``u64 little-endian N`` | ``N bytes of JSON`` | data. Offsets in the JSON are relative to
the start of the data, must tile it exactly, in any order.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import HeaderParseError
from .dtypes import DTYPES

__all__ = [
    "FIRST_READ_BYTES",
    "MAX_HEADER_BYTES",
    "SafetensorsHeader",
    "TensorInfo",
    "header_length",
    "parse_header",
    "read_header",
]

# Most headers fit in the first 100 kB, so one read usually suffices (as huggingface_hub does).
FIRST_READ_BYTES = 100_000
# The safetensors reference implementation refuses headers above 100 MB; so do we.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in its file. ``begin``/``end`` are relative to the data start."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: tensors by name, the free-form metadata, and where the data starts."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None
    header_bytes: int
    file_size: int

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def header_length(first8: bytes, *, where: str, file_size: int) -> int:
    """Validate the 8-byte length prefix against the file size and return N."""
    if file_size < 8 or len(first8) < 8:
        raise HeaderParseError(where, f"the file has {file_size} bytes, fewer than the 8-byte length prefix")
    (n,) = struct.unpack("<Q", first8[:8])
    if n < 2:
        raise HeaderParseError(where, f"header length {n} is too small to hold a JSON object")
    if n > MAX_HEADER_BYTES:
        raise HeaderParseError(where, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > file_size:
        raise HeaderParseError(where, f"header length {n} runs past the end of the {file_size}-byte file")
    return int(n)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(where: str, name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderParseError(where, f"entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise HeaderParseError(where, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise HeaderParseError(where, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise HeaderParseError(where, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise HeaderParseError(where, f"tensor {name!r} ends (offset {end}) before it begins ({begin})")
    bits = math.prod(shape) * DTYPES[dtype].bits
    if bits % 8:
        raise HeaderParseError(where, f"tensor {name!r}: {shape} x {dtype} is not a whole number of bytes")
    if end - begin != bits // 8:
        raise HeaderParseError(
            where, f"tensor {name!r}: {dtype}{shape} needs {bits // 8} bytes but data_offsets span {end - begin}"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def parse_header(prefix: bytes, *, where: str, file_size: int) -> SafetensorsHeader:
    """Parse the header held in ``prefix`` (the file's first ``8 + N`` bytes, or more).

    Args:
        prefix: the first bytes of the file; must contain the whole header.
        where: how to name the file in errors (path, or ``repo@sha:file``).
        file_size: the size of the whole file, to check that the data tiles it exactly.

    Returns:
        The validated ``SafetensorsHeader``.

    Raises:
        HeaderParseError: for any corrupt, truncated or inconsistent header.
    """
    n = header_length(prefix, where=where, file_size=file_size)
    if len(prefix) < 8 + n:
        raise HeaderParseError(where, f"only {len(prefix)} bytes given for a {n}-byte header")
    raw = prefix[8 : 8 + n]
    if raw[:1] != b"{":
        raise HeaderParseError(where, "the header does not start with '{'")
    try:
        parsed = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderParseError(where, f"the header is not valid JSON ({exc})") from None
    except RecursionError:  # deeply nested arrays/objects: json.loads recurses per level
        raise HeaderParseError(where, "the header JSON is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise HeaderParseError(where, "the header is not a JSON object")

    metadata = parsed.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise HeaderParseError(where, "__metadata__ must map strings to strings")

    tensors = {name: _tensor(where, name, entry) for name, entry in parsed.items()}
    data_size = file_size - 8 - n
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            problem = "overlaps the previous tensor" if info.begin < cursor else f"leaves a gap at offset {cursor}"
            raise HeaderParseError(where, f"tensor {info.name!r} at offset {info.begin} {problem}")
        cursor = info.end
    if cursor != data_size:
        if cursor > data_size:
            raise HeaderParseError(
                where, f"tensor data needs {cursor} bytes but the file holds only {data_size} after the header"
            )
        raise HeaderParseError(where, f"{data_size - cursor} bytes after the last tensor are not described")
    return SafetensorsHeader(tensors, metadata, n, file_size)


def read_header(
    read_range: Callable[[int, int], bytes], *, where: str, file_size: int
) -> SafetensorsHeader:
    """Fetch and parse a header with at most two reads of ``read_range(offset, length)``."""
    first = read_range(0, min(file_size, FIRST_READ_BYTES))
    n = header_length(first, where=where, file_size=file_size)
    if 8 + n > len(first):
        first = first + read_range(len(first), 8 + n - len(first))
    return parse_header(first, where=where, file_size=file_size)
