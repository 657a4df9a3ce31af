"""The one table of safetensors dtype codes: size in bits, kind, and the torch dtype (when torch has it).

Why a table: the header parser must validate every dtype safetensors defines (sizes matter for the
offset checks) without importing torch, and the reader/writer must agree with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "DtypeInfo", "common_float", "dtype_code", "is_float", "is_integer", "torch_dtype"]

Kind = Literal["float", "int", "bool", "complex"]


@dataclass(frozen=True)
class DtypeInfo:
    code: str
    bits: int
    kind: Kind
    torch_name: str | None  # attribute of the torch module, None when torch cannot represent it


# Every dtype the safetensors format defines (Rust crate 0.5+ and the Python bindings' FNUZ extras).
DTYPES: dict[str, DtypeInfo] = {
    info.code: info
    for info in (
        DtypeInfo("BOOL", 8, "bool", "bool"),
        DtypeInfo("F4", 4, "float", None),
        DtypeInfo("F6_E2M3", 6, "float", None),
        DtypeInfo("F6_E3M2", 6, "float", None),
        DtypeInfo("U8", 8, "int", "uint8"),
        DtypeInfo("I8", 8, "int", "int8"),
        DtypeInfo("F8_E5M2", 8, "float", "float8_e5m2"),
        DtypeInfo("F8_E4M3", 8, "float", "float8_e4m3fn"),
        DtypeInfo("F8_E8M0", 8, "float", "float8_e8m0fnu"),
        DtypeInfo("F8_E4M3FNUZ", 8, "float", "float8_e4m3fnuz"),
        DtypeInfo("F8_E5M2FNUZ", 8, "float", "float8_e5m2fnuz"),
        DtypeInfo("I16", 16, "int", "int16"),
        DtypeInfo("U16", 16, "int", "uint16"),
        DtypeInfo("F16", 16, "float", "float16"),
        DtypeInfo("BF16", 16, "float", "bfloat16"),
        DtypeInfo("I32", 32, "int", "int32"),
        DtypeInfo("U32", 32, "int", "uint32"),
        DtypeInfo("F32", 32, "float", "float32"),
        DtypeInfo("C64", 64, "complex", "complex64"),
        DtypeInfo("F64", 64, "float", "float64"),
        DtypeInfo("I64", 64, "int", "int64"),
        DtypeInfo("U64", 64, "int", "uint64"),
    )
}


def is_integer(code: str) -> bool:
    """True for integer and bool tensors (e.g. ``num_batches_tracked``): copied, never averaged."""
    return DTYPES[code].kind in ("int", "bool")


def is_float(code: str) -> bool:
    return DTYPES[code].kind == "float"


def common_float(codes: Iterable[str]) -> str:
    """The float dtype a merge of tensors in ``codes`` is written in: their own when they agree, else one
    that holds each of them exactly, so the order the inputs are listed in never decides the precision.

    The widest when it is float32 or float64; float32 otherwise (float16 with bfloat16: neither holds the
    other; float8 kinds with each other or with a 16-bit float).
    """
    unique = sorted(set(codes), key=lambda code: DTYPES[code].bits)
    if len(unique) == 1:
        return unique[0]
    widest = unique[-1]
    return widest if widest in ("F32", "F64") else "F32"


def torch_dtype(code: str) -> torch.dtype | None:
    """The torch dtype for ``code``, or None when this torch build cannot represent it."""
    import torch

    name = DTYPES[code].torch_name
    return getattr(torch, name, None) if name else None


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors code for a torch dtype (the writer's direction)."""
    name = str(dtype).removeprefix("torch.")
    for info in DTYPES.values():
        if info.torch_name == name:
            return info.code
    raise ValueError(f"torch dtype {dtype} has no safetensors code")
