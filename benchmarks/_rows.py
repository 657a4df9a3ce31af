"""Benchmark rows that are not hubmerge itself: floors and the full-load baseline. One row per process.

    python benchmarks/_rows.py import-torch
    python benchmarks/_rows.py read-floor FILE...
    python benchmarks/_rows.py load-floor FILE...
    python benchmarks/_rows.py full-load OUT BASE MODEL...
    python benchmarks/_rows.py compare PREFIX DIR_A DIR_B   (not a row: prints one JSON line)
"""

from __future__ import annotations

import sys
from pathlib import Path


def import_torch() -> None:
    import torch  # noqa: F401


def read_floor(files: list[str]) -> None:
    """Read every input byte once into a reusable buffer: the least any merge must do."""
    import torch  # noqa: F401  (every real row pays for it)

    buffer = bytearray(64 * 2**20)
    view = memoryview(buffer)
    for name in files:
        with open(name, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass


def load_floor(files: list[str]) -> None:
    """Load every tensor with a real copy (no merge, no write)."""
    from safetensors import safe_open

    for name in files:
        with safe_open(name, framework="pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key).clone()


def full_load(out: str, base: str, models: list[str]) -> None:
    """What FusionBench's simple average does: from_pretrained every model, average, save."""
    import torch
    from transformers import ConvNextForImageClassification
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    pretrained = ConvNextForImageClassification.from_pretrained(base)
    finetuned = [ConvNextForImageClassification.from_pretrained(m) for m in models]
    state = pretrained.convnext.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if value.is_floating_point():
                value.copy_(torch.stack([m.convnext.state_dict()[name] for m in finetuned]).mean(0))
    pretrained.save_pretrained(out)


def compare(prefix: str, a: str, b: str, rtol: float = 1e-6, atol: float = 1e-6) -> dict:
    """Compare every tensor named ``PREFIX*`` of the top-level safetensors files of two model dirs."""
    import torch
    from safetensors import safe_open

    def tensors(directory: str) -> dict:
        found = {}
        for file in sorted(Path(directory).glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                found.update({k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)})
        return found

    left, right = tensors(a), tensors(b)
    common = sorted(left.keys() & right.keys())
    max_diff, close, shapes = 0.0, True, True
    for name in common:
        x, y = left[name], right[name]
        if x.shape != y.shape:
            shapes = close = False
            continue
        if x.is_floating_point():
            max_diff = max(max_diff, (x.double() - y.double()).abs().max().item())
            close = close and torch.allclose(x, y, rtol=rtol, atol=atol)
        else:
            close = close and torch.equal(x, y)
    return {
        "tensors": len(common), "only_a": len(left.keys() - right.keys()), "only_b": len(right.keys() - left.keys()),
        "shapes_equal": shapes, "allclose": close and bool(common) and left.keys() == right.keys(),
        "max_abs_diff": max_diff, "rtol": rtol, "atol": atol,
    }


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "import-torch":
        import_torch()
    elif mode == "read-floor":
        read_floor(args)
    elif mode == "load-floor":
        load_floor(args)
    elif mode == "full-load":
        Path(args[0]).mkdir(parents=True, exist_ok=True)
        full_load(args[0], args[1], args[2:])
    elif mode == "compare":
        import json

        print(json.dumps(compare(args[0], args[1], args[2])))
    else:
        raise SystemExit(f"unknown row {mode}")
