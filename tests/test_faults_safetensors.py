"""Safetensors fuzzing: >= 1000 seeded mutations of real shard headers, bodies and shard indexes.

A tiny real ResNet (three shards + ``model.safetensors.index.json``) is merged with two intact
models. Each case mutates the victim's files (bit flips, truncation in every region, absurd
lengths, bad offsets, bad JSON, wrong dtypes and shapes, index entries escaping the model, files
that are not files) and runs ``plan``; when the plan succeeds, the whole merge runs too. A case
passes when it ends in

* a typed error (``HubmergeError``), with no output directory and no temp dir left, or
* a merge equal, byte for byte, to the merge of the unmutated inputs, or
* a complete merge, only where the mutation is undetectable (a body bit flip) or leaves files that
  the reference ``safetensors`` parser accepts as valid (e.g. a renamed head tensor).

Anything else fails: another exception, a case over its wall limit (a hang), a Python allocation
peak over ``ALLOC_LIMIT`` (a length trusted before it was checked), or a partial output.
``pytest -s`` prints the counts.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import struct
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hubmerge import engine
from hubmerge.errors import HubmergeError
from hubmerge.recipe import load_recipe

from ._models import save_model, snapshot

SEED = 20240611
CASE_WALL_LIMIT = 10  # seconds; a case is a plan of three tiny models, plus at most one tiny merge
ALLOC_LIMIT = 32 * 2**20  # Python allocation peak per case; the victim's files hold ~30 kB
RSS_GROWTH_LIMIT = 400 * 2**20
INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")


# ----------------------------------------------------------------------------- the pristine files


@dataclass(frozen=True)
class Shard:
    name: str
    data: bytes
    n: int  # header length
    header: dict  # parsed JSON
    body: bytes

    @property
    def tensors(self) -> list[str]:
        return [k for k in self.header if k != "__metadata__"]


def parse(name: str, data: bytes) -> Shard:
    (n,) = struct.unpack("<Q", data[:8])
    return Shard(name, data, n, json.loads(data[8 : 8 + n]), data[8 + n :])


def build(header: dict | list | str, body: bytes, *, pad: bool = True, raw: bytes | None = None) -> bytes:
    """A shard from a header object (or raw header bytes) and a body."""
    text = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


# A mutation: {file name in the victim dir: new bytes, or a callable(dir, name) that makes it, or None (delete)}.
Change = bytes | Callable[[Path, str], None] | None


@dataclass
class Case:
    category: str
    detail: str
    changes: dict[str, Change]
    undetectable: bool = False  # a body bit flip: any complete merge is fine
    neutral: bool = False  # the mutated files mean the same: the merge must equal the reference


@dataclass
class Tally:
    tried: int = 0
    typed: Counter = field(default_factory=Counter)
    correct: int = 0
    complete_undetectable: int = 0
    complete_valid_variant: int = 0
    merges_run: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    alloc_peak: int = 0


# ----------------------------------------------------------------------------- case generation


def generate_cases(shards: list[Shard], index: bytes, outside: Path, rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    def pick() -> Shard:
        return rng.choice(shards)

    def flip(data: bytes, lo: int, hi: int) -> tuple[bytes, int]:
        position = rng.randrange(lo, hi)
        bit = rng.randrange(8)
        out = bytearray(data)
        out[position] ^= 1 << bit
        return bytes(out), position * 8 + bit

    # -- bit flips in every region
    for _ in range(110):
        s = pick()
        data, at = flip(s.data, 0, 8)
        add(Case("bitflip-length-prefix", f"{s.name} bit {at}", {s.name: data}))
    for _ in range(300):
        s = pick()
        data, at = flip(s.data, 8, 8 + s.n)
        add(Case("bitflip-header", f"{s.name} bit {at}", {s.name: data}))
    for _ in range(60):
        s = pick()
        data, at = flip(s.data, 8 + s.n, len(s.data))
        add(Case("bitflip-body", f"{s.name} bit {at}", {s.name: data}, undetectable=True))

    # -- truncation inside the length prefix, the header and the body, and at the boundaries
    for s in shards:
        for cut in range(8):
            add(Case("truncate-prefix", f"{s.name}[:{cut}]", {s.name: s.data[:cut]}))
        for cut in [8, 9, 8 + s.n - 1, 8 + s.n, 8 + s.n + 1, len(s.data) - 1]:
            add(Case("truncate-boundary", f"{s.name}[:{cut}]", {s.name: s.data[:cut]}))
    for _ in range(60):
        s = pick()
        cut = rng.randrange(9, 8 + s.n)
        add(Case("truncate-header", f"{s.name}[:{cut}]", {s.name: s.data[:cut]}))
    for _ in range(45):
        s = pick()
        cut = rng.randrange(8 + s.n + 1, len(s.data))
        add(Case("truncate-body", f"{s.name}[:{cut}]", {s.name: s.data[:cut]}))

    # -- huge, negative, zero and off-by-one header lengths
    for s in shards:
        size = len(s.data)
        values = [0, 1, 2, 7, s.n - 1, s.n + 1, s.n + 8, size - 8, size - 7, size, 100_000_000, 100_000_001,
                  2**32, 2**32 + s.n, 2**63 - 1, 2**63, 2**64 - 1]
        for value in values:
            add(Case("length-value", f"{s.name} N={value}", {s.name: struct.pack("<Q", value) + s.data[8:]}))
        for value in (-1, -s.n, -(2**63)):
            add(Case("length-negative", f"{s.name} N={value}", {s.name: struct.pack("<q", value) + s.data[8:]}))

    # -- data_offsets: overlapping, gapped, out of the file, of the wrong type
    def with_entry(s: Shard, name: str, key: str, value: object) -> bytes:
        header = json.loads(json.dumps(s.header))
        header[name][key] = value
        return build(header, s.body)

    offset_values: list[Callable[[int, int, int], object]] = [
        lambda b, e, size: [b - 1, e - 1] if b else [0, e + 1],
        lambda b, e, size: [b + 1, e + 1],
        lambda b, e, size: [b, e + 4],
        lambda b, e, size: [b, e - 4],
        lambda b, e, size: [e, b],
        lambda b, e, size: [size, size + (e - b)],
        lambda b, e, size: [2**62, 2**62 + (e - b)],
        lambda b, e, size: [2**64 + b, 2**64 + e],
        lambda b, e, size: [10**40, 10**40 + (e - b)],
        lambda b, e, size: [-(e - b), 0],
        lambda b, e, size: [-1, e],
        lambda b, e, size: [float(b), float(e)],
        lambda b, e, size: [str(b), str(e)],
        lambda b, e, size: [True, e],
        lambda b, e, size: [b],
        lambda b, e, size: [b, e, e],
        lambda b, e, size: None,
        lambda b, e, size: {"begin": b, "end": e},
        lambda b, e, size: [0, e - b],  # overlaps the first tensor (unless it is the first)
    ]
    for make in offset_values:
        for _ in range(6):
            s = pick()
            name = rng.choice(s.tensors)
            begin, end = s.header[name]["data_offsets"]
            value = make(begin, end, len(s.body))
            add(Case("data-offsets", f"{s.name} {name} -> {value!r:.60}", {s.name: with_entry(s, name, "data_offsets", value)}))
    for _ in range(10):  # two tensors swap their ranges (equal sizes keep the tiling valid only if equal shapes)
        s = pick()
        a, b = rng.sample(s.tensors, 2)
        header = json.loads(json.dumps(s.header))
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
        add(Case("data-offsets-swap", f"{s.name} {a} <-> {b}", {s.name: build(header, s.body)}))

    # -- dtypes
    dtype_values: list[object] = ["F33", "f32", "", " F32", "F32\u0000", "FLOAT32", "F16", "F64", "I64", "I32", "U8",
                                  "BOOL", "C64", "F4", "F6_E2M3", "F8_E4M3", "F8_E8M0", None, 32, ["F32"], "x" * 5000]
    for value in dtype_values:
        for _ in range(3):
            s = pick()
            name = rng.choice(s.tensors)
            add(Case("dtype", f"{s.name} {name} dtype={value!r:.30}", {s.name: with_entry(s, name, "dtype", value)}))
    for s in shards:  # a consistent dtype change that still tiles the file: F32 -> I32 (same width)
        name = next(n for n in s.tensors if s.header[n]["dtype"] == "F32")
        for dtype in ("I32", "U32"):
            add(Case("dtype-same-width", f"{s.name} {name} F32->{dtype}", {s.name: with_entry(s, name, "dtype", dtype)}))

    # -- shapes
    shape_values: list[Callable[[list[int]], object]] = [
        lambda sh: [-d for d in sh] or [-1],
        lambda sh: [*sh, 2],
        lambda sh: [*sh, 1],  # same bytes, another rank: a valid file of a different model
        lambda sh: [*sh, 0],
        lambda sh: [2**64] + sh[1:],
        lambda sh: [2**62, 2**62],
        lambda sh: [float(d) for d in sh] or [1.0],
        lambda sh: [str(d) for d in sh] or ["1"],
        lambda sh: [True] * max(1, len(sh)),
        lambda sh: None,
        lambda sh: "[1,2]",
        lambda sh: [sh],
        lambda sh: list(reversed(sh)) if len(set(sh)) > 1 else [*sh, 1],
    ]
    for make in shape_values:
        for _ in range(4):
            s = pick()
            name = rng.choice(s.tensors)
            value = make(list(s.header[name]["shape"]))
            add(Case("shape", f"{s.name} {name} shape={value!r:.40}", {s.name: with_entry(s, name, "shape", value)}))

    # -- bad JSON and other header texts
    raw_headers: list[tuple[str, Callable[[Shard], bytes]]] = [
        ("empty object", lambda s: b"{}"),
        ("array", lambda s: b"[]"),
        ("string", lambda s: b'"x"'),
        ("number", lambda s: b"1234"),
        ("null", lambda s: b"null"),
        ("leading space", lambda s: b" " + json.dumps(s.header).encode()),
        ("BOM", lambda s: b"\xef\xbb\xbf" + json.dumps(s.header).encode()),
        ("trailing garbage", lambda s: json.dumps(s.header).encode() + b"}"),
        ("trailing comma", lambda s: json.dumps(s.header).encode()[:-1] + b",}"),
        ("NUL padding", lambda s: json.dumps(s.header).encode() + b"\x00" * 7),
        ("invalid utf-8", lambda s: json.dumps(s.header).encode().replace(b"resnet", b"res\xffet", 1)),
        ("lone surrogate", lambda s: json.dumps(s.header).encode().replace(b'"__metadata__"', b'"\\ud800"', 1)),
        ("NaN literal", lambda s: json.dumps(s.header).encode().replace(b'"format"', b'"nan": NaN, "format"', 1)),
        ("deep nesting", lambda s: b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("deep objects", lambda s: b'{"a":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"),
        ("duplicate key", lambda s: json.dumps(s.header).encode()[:-1]
            + b"," + json.dumps({s.tensors[0]: s.header[s.tensors[0]]}).encode()[1:]),
        ("huge number", lambda s: json.dumps(s.header).encode().replace(b'"data_offsets": [0,', b'"data_offsets": [' + b"9" * 5000 + b",", 1)),
        ("truncated json", lambda s: json.dumps(s.header).encode()[: len(json.dumps(s.header)) // 2]),
        ("metadata list", lambda s: json.dumps({**s.header, "__metadata__": ["pt"]}).encode()),
        ("metadata int value", lambda s: json.dumps({**s.header, "__metadata__": {"format": 1}}).encode()),
        ("metadata null", lambda s: json.dumps({**s.header, "__metadata__": None}).encode()),
        ("metadata extra", lambda s: json.dumps({**s.header, "__metadata__": {"format": "pt", "x": "y" * 1000}}).encode()),
        ("no metadata", lambda s: json.dumps({k: v for k, v in s.header.items() if k != "__metadata__"}).encode()),
        ("entry is a list", lambda s: json.dumps({**s.header, s.tensors[0]: [1, 2]}).encode()),
        ("entry is null", lambda s: json.dumps({**s.header, s.tensors[-1]: None}).encode()),
        ("entry extra key", lambda s: json.dumps({**s.header, s.tensors[0]: {**s.header[s.tensors[0]], "x": 1}}).encode()),
        ("entry missing key", lambda s: json.dumps({**s.header, s.tensors[0]: {"dtype": "F32", "shape": [1]}}).encode()),
        ("tensor dropped", lambda s: json.dumps({k: v for k, v in s.header.items() if k != s.tensors[-1]}).encode()),
        ("zero-size tensor added", lambda s: json.dumps({**s.header, "extra.empty": {
            "dtype": "F32", "shape": [0], "data_offsets": [len(s.body), len(s.body)]}}).encode()),
        ("whitespace re-serialised", lambda s: json.dumps(s.header, indent=4).encode()),
        ("keys reordered", lambda s: json.dumps(dict(reversed(list(s.header.items())))).encode()),
    ]
    for label, make in raw_headers:
        for s in shards:
            neutral = label in ("whitespace re-serialised", "keys reordered", "no metadata", "metadata extra",
                                "entry extra key")
            add(Case("header-text", f"{s.name} {label}", {s.name: build(None, s.body, raw=make(s))}, neutral=neutral))
    for _ in range(30):  # a random JSON-breaking byte somewhere in the header
        s = pick()
        at = rng.randrange(8, 8 + s.n)
        data = bytearray(s.data)
        data[at] = rng.choice(b'{}[]",:\\\x00\xff0-')
        add(Case("header-byte", f"{s.name} byte {at}={data[at]:#x}", {s.name: bytes(data)}))

    # -- tensors moved between shards: duplicates across files, renamed tensors
    for _ in range(6):
        a, b = rng.sample(shards, 2)
        name = rng.choice(a.tensors)
        other = rng.choice(b.tensors)
        header = json.loads(json.dumps(b.header))
        header[name] = header.pop(other)
        add(Case("duplicate-across-shards", f"{other} in {b.name} renamed {name} (also in {a.name})",
                 {b.name: build(header, b.body)}))
    for _ in range(8):
        s = pick()
        name = rng.choice(s.tensors)
        header = json.loads(json.dumps(s.header))
        header[name + ".renamed"] = header.pop(name)
        add(Case("renamed-tensor", f"{s.name} {name}", {s.name: build(header, s.body)}))

    # -- whole files: empty, missing, extra bytes, not a file, escaping symlinks
    for s in shards:
        add(Case("file", f"{s.name} empty", {s.name: b""}))
        add(Case("file", f"{s.name} deleted", {s.name: None}))
        add(Case("file", f"{s.name} + 8 bytes", {s.name: s.data + b"\x00" * 8}))
        add(Case("file", f"{s.name} doubled", {s.name: s.data + s.data}))
        add(Case("file", f"{s.name} is a directory", {s.name: lambda d, n: (d / n).mkdir()}))
        add(Case("file", f"{s.name} is a FIFO", {s.name: lambda d, n: os.mkfifo(d / n)}))
        add(Case("file", f"{s.name} symlink outside", {s.name: lambda d, n: (d / n).symlink_to(outside / n)}))
        add(Case("file", f"{s.name} symlink to /dev/zero", {s.name: lambda d, n: (d / n).symlink_to("/dev/zero")}))
    add(Case("file", "index deleted (three loose shards)", {INDEX: None}))
    add(Case("file", "index empty", {INDEX: b""}))

    # -- the shard index
    weight_map: dict[str, str] = json.loads(index)["weight_map"]
    tensor_names = sorted(weight_map)

    def index_with(mapping: object = None, *, whole: object = None) -> bytes:
        data = json.loads(index)
        if whole is not None:
            return json.dumps(whole).encode()
        data["weight_map"] = mapping
        return json.dumps(data, indent=2).encode()

    escapes = [
        f"../other/{SHARDS[0]}", f"../../victim/{SHARDS[0]}", str(outside / SHARDS[0]), f"/{SHARDS[0]}",
        f"/etc/../{SHARDS[0]}", f"sub/../../{SHARDS[0]}", f"..\\{SHARDS[0]}", f"C:{SHARDS[0]}", f"C:\\x\\{SHARDS[0]}",
        f"\\\\server\\share\\{SHARDS[0]}", f"{SHARDS[0]}\x00.txt", f"./../{SHARDS[0]}", "..", ".", "", "/",
        "config.json", "../other/config.json", f"{SHARDS[0]}.bak", "file:///etc/passwd", f"~/{SHARDS[0]}",
        f"{SHARDS[0]}/", "missing-00004-of-00003.safetensors", f"sub/{SHARDS[0]}",
    ]
    for target in escapes:
        for _ in range(2):
            name = rng.choice(tensor_names)
            add(Case("index-path", f"{name} -> {target!r}", {INDEX: index_with({**weight_map, name: target})}))
    for target in escapes[:8]:  # every entry at once
        add(Case("index-path-all", f"all -> {target!r}", {INDEX: index_with({k: target for k in weight_map})}))
    odd_values: list[object] = [None, 1, True, [SHARDS[0]], {"file": SHARDS[0]}]
    for value in odd_values:
        name = rng.choice(tensor_names)
        add(Case("index-value", f"{name} -> {value!r}", {INDEX: index_with({**weight_map, name: value})}))
    for _ in range(8):
        name = rng.choice(tensor_names)
        wrong = rng.choice([s for s in SHARDS if s != weight_map[name]])
        add(Case("index-wrong-shard", f"{name} -> {wrong}", {INDEX: index_with({**weight_map, name: wrong})}))
    for _ in range(6):
        name = rng.choice(tensor_names)
        add(Case("index-drop", name, {INDEX: index_with({k: v for k, v in weight_map.items() if k != name})}))
    add(Case("index-extra", "unknown tensor", {INDEX: index_with({**weight_map, "ghost.weight": SHARDS[1]})}))
    add(Case("index-structure", "weight_map empty", {INDEX: index_with({})}))
    add(Case("index-structure", "weight_map list", {INDEX: index_with([list(x) for x in weight_map.items()])}))
    add(Case("index-structure", "weight_map null", {INDEX: index_with(None)}))
    add(Case("index-structure", "no weight_map", {INDEX: index_with(whole={"metadata": {}})}))
    add(Case("index-structure", "array", {INDEX: b"[]"}))
    add(Case("index-structure", "not json", {INDEX: b"weight_map: {}"}))
    add(Case("index-structure", "invalid utf-8", {INDEX: index.replace(b"model", b"mod\xffl", 1)}))
    add(Case("index-structure", "deep nesting", {INDEX: b'{"weight_map":' + b"[" * 100_000 + b"]" * 100_000 + b"}"}))
    add(Case("index-structure", "truncated", {INDEX: index[: len(index) // 2]}))
    add(Case("index-neutral", "./ prefixes", {INDEX: index_with({k: f"./{v}" for k, v in weight_map.items()})},
             neutral=True))
    add(Case("index-neutral", "compact, no metadata", {INDEX: index_with(whole={"weight_map": weight_map})},
             neutral=True))
    add(Case("index-neutral", "a/../ inside", {INDEX: index_with({k: f"a/../{v}" for k, v in weight_map.items()})},
             neutral=True))
    for _ in range(60):
        data, at = flip(index, 0, len(index))
        add(Case("index-bitflip", f"bit {at}", {INDEX: data}))
    return cases


# ----------------------------------------------------------------------------- running one case


class CaseTimeout(Exception):
    """A case ran past CASE_WALL_LIMIT: a hang."""


def _alarm(signum, frame):  # a signal handler's signature
    raise CaseTimeout(f"case ran longer than {CASE_WALL_LIMIT} s")


def apply(victim: Path, changes: dict[str, Change]) -> None:
    for name, change in changes.items():
        path = victim / name
        path.unlink()
        if callable(change):
            change(victim, name)
        elif change is not None:
            path.write_bytes(change)


def restore(victim: Path, pristine: dict[str, bytes], changes: dict[str, Change]) -> None:
    for name in changes:
        path = victim / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.write_bytes(pristine[name])


def reference_accepts(victim: Path, changes: dict[str, Change]) -> bool:
    """Whether the safetensors reference parser loads every mutated shard."""
    from safetensors import safe_open

    for name in changes:
        if not name.endswith(".safetensors"):
            return False
        try:
            with safe_open(str(victim / name), "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    handle.get_tensor(key)
        except Exception:
            return False
    return True


def complete(output: Path, reference: dict[str, bytes]) -> str | None:
    """None if ``output`` is a whole merge (same files as the reference, every shard loadable)."""
    from safetensors.torch import load_file

    files = snapshot(output)
    if set(files) != set(reference):
        return f"files differ from the reference: {sorted(set(files) ^ set(reference))}"
    for name in files:
        if name.endswith(".safetensors"):
            load_file(output / name)
        elif name.endswith(".json"):
            json.loads(files[name])
    return None


def leftovers(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name.startswith(".out"))


def run_case(case: Case, recipe, victim: Path, work: Path, reference: dict[str, bytes], tally: Tally) -> None:
    output = work / "out"
    where = f"[{case.category}] {case.detail}"
    merge_plan = None
    stage = "plan"
    try:
        merge_plan = engine.plan(recipe)
        stage = "merge"
        tally.merges_run += 1
        engine.execute(merge_plan, output, workers=1)
    except HubmergeError as exc:
        tally.typed[f"{stage}:{type(exc).__name__}"] += 1
        if case.neutral:
            tally.failures.append(f"{where}: a meaning-preserving change was refused: {type(exc).__name__}: {exc}")
        if output.exists():
            tally.failures.append(f"{where}: {type(exc).__name__} but the output exists")
        if not str(exc):
            tally.failures.append(f"{where}: {type(exc).__name__} with an empty message")
    except CaseTimeout:
        tally.failures.append(f"{where}: HANG (over {CASE_WALL_LIMIT} s at {stage})")
    except BaseException as exc:  # any non-typed error is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        tally.failures.append(f"{where}: untyped {type(exc).__name__} at {stage}: {exc!r:.300}\n"
                              + "".join(traceback.format_exception(exc)[-4:]))
    else:
        produced = snapshot(output)
        if produced == reference:
            tally.correct += 1
        elif case.neutral:
            tally.failures.append(f"{where}: a meaning-preserving change gave a different merge")
        elif case.undetectable or reference_accepts(victim, case.changes):
            problem = complete(output, reference)
            if problem:
                tally.failures.append(f"{where}: incomplete output: {problem}")
            elif case.undetectable:
                tally.complete_undetectable += 1
            else:
                tally.complete_valid_variant += 1
        else:
            tally.failures.append(f"{where}: merged a file that the reference safetensors parser rejects, "
                                  "into an output that differs from the reference")
    finally:
        if merge_plan is not None:
            engine.close_plan(merge_plan)
    if leftovers(work):
        tally.failures.append(f"{where}: temp dirs left beside the output: {leftovers(work)}")
    shutil.rmtree(output, ignore_errors=True)
    for stale in leftovers(work):
        shutil.rmtree(work / stale, ignore_errors=True)


# ----------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for name, seed in (("base", 0), ("victim", 1), ("other", 2)):
        save_model("resnet", root / name, seed=seed, num_labels=10, max_shard_size="12KB")
    assert sorted(p.name for p in (root / "victim").glob("*.safetensors")) == list(SHARDS)
    outside = root / "outside"  # real shards outside the model dir, for escaping paths to find
    shutil.copytree(root / "other", outside)
    recipe = {
        "method": "task_arithmetic",
        "base_model": str(root / "base"),
        "models": [{"model": str(root / "victim"), "task": "alpha"}, {"model": str(root / "other"), "task": "beta"}],
        "target_modules": ["resnet"],
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root, outside


@pytest.mark.timeout(300)
def test_fuzzed_safetensors_end_in_typed_errors_or_correct_merges(models, tmp_path):
    root, outside = models
    victim = root / "victim"
    recipe = load_recipe(root / "recipe.yaml")
    pristine = {name: (victim / name).read_bytes() for name in (*SHARDS, INDEX)}
    shards = [parse(name, pristine[name]) for name in SHARDS]
    cases = generate_cases(shards, pristine[INDEX], outside, random.Random(SEED))

    work = tmp_path / "work"
    work.mkdir()
    engine.merge(recipe, work / "out", workers=1)
    reference = snapshot(work / "out")
    shutil.rmtree(work / "out")

    tally = Tally()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    previous = signal.signal(signal.SIGALRM, _alarm)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for case in cases:
            tally.tried += 1
            apply(victim, case.changes)
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, CASE_WALL_LIMIT)
            try:
                run_case(case, recipe, victim, work, reference, tally)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                restore(victim, pristine, case.changes)
            tally.slowest = max(tally.slowest, time.perf_counter() - t0)
            peak = tracemalloc.get_traced_memory()[1]
            tally.alloc_peak = max(tally.alloc_peak, peak)
            if peak > ALLOC_LIMIT:
                tally.failures.append(f"[{case.category}] {case.detail}: allocated {peak / 2**20:.0f} MiB")
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, previous)
        for name, data in pristine.items():  # whatever happened, leave the victim whole
            if (victim / name).is_dir() and not (victim / name).is_symlink():
                shutil.rmtree(victim / name)
            elif (victim / name).exists() or (victim / name).is_symlink():
                (victim / name).unlink()
            (victim / name).write_bytes(data)
    elapsed = time.perf_counter() - started
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before

    by_category = Counter(c.category for c in cases)
    typed_total = sum(tally.typed.values())
    print(f"\nsafetensors fuzz: {tally.tried} cases in {elapsed:.1f} s (slowest {tally.slowest:.2f} s, "
          f"alloc peak {tally.alloc_peak / 2**20:.1f} MiB, max RSS growth {rss_growth / 2**20:.0f} MiB)")
    print(f"  typed errors {typed_total}, correct merges {tally.correct}, complete merges of undetectable "
          f"body flips {tally.complete_undetectable}, of still-valid variants {tally.complete_valid_variant}; "
          f"merges run {tally.merges_run}; failures {len(tally.failures)}")
    print("  categories: " + ", ".join(f"{k}={v}" for k, v in sorted(by_category.items())))
    print("  errors: " + ", ".join(f"{k}={v}" for k, v in tally.typed.most_common()))

    assert not tally.failures, f"{len(tally.failures)} failing case(s):\n" + "\n".join(tally.failures[:25])
    assert tally.tried >= 1000
    assert typed_total + tally.correct + tally.complete_undetectable + tally.complete_valid_variant == tally.tried
    assert tally.correct >= 5 and typed_total >= 900  # neutral cases merge; nearly everything else is refused
    assert rss_growth < RSS_GROWTH_LIMIT
    assert snapshot(victim) == {**snapshot(victim), **pristine}
