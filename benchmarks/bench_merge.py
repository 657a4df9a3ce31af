"""`make bench`: hubmerge's streaming merge against the read floor and a full-load baseline.

Inputs: 1 base + 8 fine-tunes of the real facebook/convnext-base-224 shape (generated once into
$HUBMERGE_BENCH_CACHE, ~3.2 GB). Each row runs in its own process, page cache warm, `--repeat`
times; the table shows the median wall time, its ratio to the read floor (import torch + read every
input byte once), peak RSS and peak private memory. A second table merges 2, 4 and 8 models to show
that memory stays flat as inputs grow.

    python benchmarks/bench_merge.py [--repeat 3] [--device cpu] [--scaling 2,4,8]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _inputs import DEFAULT_CACHE, generate, write_recipe  # noqa: E402
from _measure import Row, markdown, measure, precompile  # noqa: E402

HERE = Path(__file__).parent
PY = sys.executable
HUBMERGE = [PY, "-m", "hubmerge.cli"]


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def hubmerge_cmd(recipe: Path, out: Path, device: str, *extra: str) -> list[str]:
    """``hubmerge merge`` as every benchmark row runs it (replacing ``out``, no progress bars)."""
    return [*HUBMERGE, "merge", str(recipe), "-o", str(out), "--overwrite", "--quiet", "--device", device, *extra]


def hubmerge_row(name: str, recipe: Path, out: Path, repeat: int, device: str) -> Row:
    return measure(name, hubmerge_cmd(recipe, out, device), repeat=repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scaling", default="2,4,8", help="model counts for the scaling table ('' to skip)")
    args = parser.parse_args()

    precompile(HERE.parent / "hubmerge")
    print(f"generating inputs in {args.cache} (once)...", flush=True)
    inputs = generate(8, args.cache)
    files = [str(f) for f in inputs.files()]
    work = Path(tempfile.mkdtemp(prefix="hubmerge-bench-"))
    try:
        measure("warm-up", [PY, str(HERE / "_rows.py"), "read-floor", *files], repeat=1)  # page cache warm
        rows = [
            measure("import torch", [PY, str(HERE / "_rows.py"), "import-torch"], repeat=args.repeat),
            measure("read floor (import torch + read all bytes)", [PY, str(HERE / "_rows.py"), "read-floor", *files],
                    repeat=args.repeat),
        ]
        for method, parameters in (("simple_average", {}), ("task_arithmetic", {"scaling_factor": 0.3}),
                                   ("ties", {"density": 0.2})):
            recipe = write_recipe(inputs, method, work / f"{method}.yaml", parameters=parameters)
            rows.append(hubmerge_row(f"hubmerge {method}", recipe, work / "out", args.repeat, args.device))
        rows.append(measure(
            "full-load baseline (from_pretrained x9, average)",
            [PY, str(HERE / "_rows.py"), "full-load", str(work / "full"), str(inputs.base),
             *map(str, inputs.models.values())],
            repeat=args.repeat,
        ))
        print(f"\n## 1 base + 8 models, convnext-base-224 shape, {inputs.bytes / 1e9:.2f} GB of inputs, device {args.device}")
        print(f"Machine: {machine()}\n")
        print(markdown(rows, floor="read floor (import torch + read all bytes)"))

        counts = [int(c) for c in args.scaling.split(",") if c]
        if counts:
            scaling = []
            for n in counts:
                subset = inputs.first(n)
                recipe = write_recipe(subset, "simple_average", work / f"scale{n}.yaml")
                scaling.append(hubmerge_row(f"hubmerge simple_average, {n} models", recipe, work / "out", 1, args.device))
                floor_files = [str(f) for f in subset.files()]
                scaling.append(measure(f"read floor, {n} models", [PY, str(HERE / "_rows.py"), "read-floor", *floor_files],
                                       repeat=1))
            print("\n## Scaling: memory stays flat as the number of models grows\n")
            print(markdown(scaling, floor=f"read floor, {counts[-1]} models"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
