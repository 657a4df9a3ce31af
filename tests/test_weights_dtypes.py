"""The safetensors dtype table: sizes the header checks rely on, what is merged, what is copied."""

from __future__ import annotations

import pytest
import torch

from hubmerge.weights.dtypes import DTYPES, common_float, dtype_code, is_float, is_integer, torch_dtype


@pytest.mark.parametrize("code", sorted(DTYPES))
def test_sizes_agree_with_torch_and_codes_round_trip(code):
    dtype = torch_dtype(code)
    if dtype is None:
        pytest.skip(f"this torch has no {code}")
    assert DTYPES[code].bits == torch.empty(0, dtype=dtype).element_size() * 8
    assert dtype_code(dtype) == code


def test_sub_byte_floats_have_their_own_sizes():
    """F4 and the F6 kinds: a tensor of them spans bits * n / 8 bytes, which the header's offsets must match."""
    assert [DTYPES[c].bits for c in ("F4", "F6_E2M3", "F6_E3M2")] == [4, 6, 6]
    assert all(is_float(c) and torch_dtype(c) is None for c in ("F4", "F6_E2M3", "F6_E3M2"))


def test_integers_and_booleans_are_copied_not_averaged():
    assert is_integer("BOOL") and is_integer("I64") and is_integer("U8")
    assert not is_integer("F32") and not is_float("BOOL") and not is_float("C64")


@pytest.mark.parametrize(
    "codes, expected",
    [(["BF16"], "BF16"), (["F16", "F16"], "F16"), (["F16", "F32"], "F32"), (["F64", "F32"], "F64"),
     (["F16", "BF16"], "F32"), (["BF16", "F16"], "F32"), (["F8_E4M3", "F16"], "F32"), (["F64", "F8_E5M2"], "F64")],
)
def test_common_float_holds_every_input_whatever_their_order(codes, expected):
    assert common_float(codes) == expected
