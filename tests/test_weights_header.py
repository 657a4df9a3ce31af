"""Safetensors header parsing: every dtype, the length prefix, offsets, metadata and corrupt input."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
import torch
from safetensors.torch import save

from hubmerge.errors import HeaderParseError
from hubmerge.weights.dtypes import DTYPES, dtype_code, torch_dtype
from hubmerge.weights.header import FIRST_READ_BYTES, MAX_HEADER_BYTES, TensorInfo, parse_header, read_header


def encode(header: dict, data: bytes = b"", *, pad: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + data


def parse(blob: bytes):
    return parse_header(blob, where="test.safetensors", file_size=len(blob))


def test_parses_what_the_reference_writer_writes():
    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.ones(4, dtype=torch.bfloat16),
        "c": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 5),
    }
    blob = save(tensors, metadata={"format": "pt"})
    header = parse(blob)
    assert header.metadata == {"format": "pt"}
    assert header.tensors["a"].shape == (2, 3) and header.tensors["a"].dtype == "F32"
    assert header.tensors["b"].dtype == "BF16" and header.tensors["b"].nbytes == 8
    assert header.tensors["c"].shape == () and header.tensors["c"].nbytes == 8
    assert header.tensors["empty"].nbytes == 0
    offset, length = header.data_start + header.tensors["a"].begin, header.tensors["a"].nbytes  # open_weights
    assert torch.equal(torch.frombuffer(bytearray(blob[offset : offset + length]), dtype=torch.float32).reshape(2, 3), tensors["a"])


@pytest.mark.parametrize("code", sorted(DTYPES))
def test_every_safetensors_dtype_is_known(code):
    bits = DTYPES[code].bits
    shape = [4] if bits % 8 == 0 else [8]  # sub-byte types need whole bytes
    nbytes = 8 * bits // 8 if bits % 8 else 4 * bits // 8
    blob = encode({"t": {"dtype": code, "shape": shape, "data_offsets": [0, nbytes]}}, b"\0" * nbytes)
    assert parse(blob).tensors["t"].nbytes == nbytes


def test_dtype_table_round_trips_through_torch():
    for code, info in DTYPES.items():
        dtype = torch_dtype(code)
        if dtype is not None:
            assert dtype_code(dtype) == code
            assert dtype.itemsize * 8 == info.bits


def test_padding_and_metadata_are_accepted():
    blob = encode({"__metadata__": {"k": "v"}, "x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"ab", pad=5)
    assert parse(blob).metadata == {"k": "v"}


@pytest.mark.parametrize(
    "blob, problem",
    [
        (b"\x01\x02", "fewer than the 8-byte"),
        (struct.pack("<Q", 1000) + b"{}", "runs past the end"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "exceeds"),
        (struct.pack("<Q", 1) + b"{", "too small"),
        (struct.pack("<Q", 4) + b"[12]", "does not start with"),
        (struct.pack("<Q", 4) + b"{1:}", "not valid JSON"),
        (struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", "does not start with"),
    ],
)
def test_corrupt_prefix_is_a_typed_error(blob, problem):
    with pytest.raises(HeaderParseError, match=problem):
        parse(blob)


def t(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize(
    "header, data_len, problem",
    [
        ({"a": t(dtype="F99")}, 8, "unknown dtype"),
        ({"a": t(shape=(-1,))}, 8, "invalid shape"),
        ({"a": t(shape=("2",))}, 8, "invalid shape"),
        ({"a": t(offsets=(0,))}, 8, "invalid data_offsets"),
        ({"a": t(offsets=(8, 0))}, 8, "ends"),
        ({"a": t(offsets=(0, 12))}, 12, "needs 8 bytes"),
        ({"a": t(), "b": t(offsets=(4, 12))}, 12, "overlaps"),
        ({"a": t(), "b": t(offsets=(0, 8))}, 16, "overlaps|gap"),
        ({"a": t(), "b": t(offsets=(12, 20))}, 20, "gap"),
        ({"a": t()}, 12, "not described"),
        ({"a": t(), "b": t(offsets=(8, 16))}, 8, "needs 16 bytes"),
        ({"__metadata__": {"k": 1}, "a": t()}, 8, "__metadata__"),
        ({"a": [1, 2]}, 8, "not an object"),
        ({"a": t(dtype="F4", shape=(3,), offsets=(0, 1))}, 1, "whole number of bytes"),
    ],
)
def test_inconsistent_headers_are_refused(header, data_len, problem):
    with pytest.raises(HeaderParseError, match=problem):
        parse(encode(header, b"\0" * data_len))


@pytest.mark.parametrize("order", [*itertools.permutations(["__metadata__", "a", "empty", "b"])], ids="-".join)
def test_key_order_does_not_change_the_parse(order):
    # Offsets must tile the data in offset order, whatever order the JSON lists them in; the empty tensor
    # sits at offset 8 with "b", so it must come first there (sorted by begin, then end).
    entries = {
        "__metadata__": {"format": "pt"},
        "a": t(offsets=(0, 8)),
        "empty": t(shape=(0,), offsets=(8, 8)),
        "b": t(dtype="U8", shape=(8,), offsets=(8, 16)),
    }
    header = parse(encode({key: entries[key] for key in order}, bytes(range(16))))
    assert header.metadata == {"format": "pt"}
    assert header.tensors == {
        "a": TensorInfo("a", "F32", (2,), 0, 8),
        "empty": TensorInfo("empty", "F32", (0,), 8, 8),
        "b": TensorInfo("b", "U8", (8,), 8, 16),
    }


def test_duplicate_tensor_names_are_refused():
    raw = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    with pytest.raises(HeaderParseError, match="duplicate"):
        parse(struct.pack("<Q", len(raw)) + raw + b"\0")


def test_error_names_the_file_and_says_what_to_do():
    with pytest.raises(HeaderParseError) as info:
        parse_header(b"\0" * 4, where="org/model@abc:model.safetensors", file_size=4)
    assert "org/model@abc:model.safetensors" in str(info.value)
    assert "download it again" in str(info.value)
    assert isinstance(info.value, OSError)


def test_read_header_uses_one_read_for_small_headers_and_two_for_big_ones():
    small = save({"a": torch.zeros(3)})
    calls = []

    def reader(blob):
        def read(offset, length):
            calls.append((offset, length))
            return blob[offset : offset + length]

        return read

    read_header(reader(small), where="s", file_size=len(small))
    assert len(calls) == 1
    calls.clear()
    big = save({f"tensor_{i:06d}": torch.zeros(1) for i in range(3000)})
    assert len(big) > FIRST_READ_BYTES
    header = read_header(reader(big), where="b", file_size=len(big))
    assert len(header.tensors) == 3000
    assert len(calls) == 2 and calls[1][0] == FIRST_READ_BYTES
    # the second read takes the rest of the header only, not as much again (up to 100 MB more)
    assert calls[1] == (FIRST_READ_BYTES, header.data_start - FIRST_READ_BYTES)


def test_a_prefix_short_of_the_header_is_refused_even_inside_its_padding():
    blob = encode({"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"ab", pad=5)
    with pytest.raises(HeaderParseError, match="only .* bytes given"):
        parse_header(blob[: len(blob) - 2 - 3], where="short", file_size=len(blob))


def test_read_header_survives_a_source_that_returns_short():
    blob = save({"a": torch.zeros(3)})
    with pytest.raises(HeaderParseError):
        read_header(lambda o, n: blob[o : o + n][:5], where="short", file_size=len(blob))
