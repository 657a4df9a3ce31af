"""`make bench-peers`: hubmerge against FusionBench and mergekit on the same inputs, plus floors and scaling.

Inputs: 1 base + 8 fine-tunes of the real facebook/convnext-base-224 shape (heads 397, 196, 45, 10,
10, 43, 10, 47), fp32, generated once into $HUBMERGE_BENCH_CACHE (~/.cache/hubmerge/bench), page
cache warm. Every row runs in its own process `--repeat` times, the rows of a table round-robin (run 1
of every row, then run 2, ...: a burst of someone else's load hits several rows, not all runs of one);
the tables show median and min-max of wall time, peak RSS and peak private memory (RssAnon, sampled
every 10 ms).

Rows: the floors (import torch; + read every input byte once; + load every tensor with a copy),
hubmerge simple_average / task_arithmetic / ties from local files and from a local Hub over HTTP
(`hubmerge hub serve` in a subprocess), FusionBench 0.2.33 (its CLI, SimpleAverageAlgorithm on its
ConvNeXt pool, as its 8-task example), mergekit 0.1.5 (`mergekit-pytorch` linear on head-less copies;
`mergekit-yaml` linear, which fails on ConvNeXt: recorded as a failed row). The peers run with
.venv-peers/bin/python (`make bench-peers` creates it); hubmerge and the harness with this Python.
Then: the merged backbones compared tensor by tensor, a scaling table (2, 4, 8, 16 inputs), and the
targets. Everything printed is also written to benchmarks/results/peers.md.

    python benchmarks/bench_peers.py [--repeat 3] [--device cpu] [--scaling 2,4,8,16] [--skip-peers] [--skip-hub]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _inputs import DEFAULT_CACHE, HubInputs, Inputs, generate, headless, task_name, write_recipe  # noqa: E402
from _measure import Row, Spec, gb, markdown, measure, measure_interleaved, precompile  # noqa: E402
from bench_merge import hubmerge_cmd, machine  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent
PY = sys.executable
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
METHODS = (("simple_average", {}), ("task_arithmetic", {"scaling_factor": 0.3}), ("ties", {"density": 0.2}))
MODEL_BYTES = 352_000_000  # one generated fine-tune on disk

READ_FLOOR = "read floor (import torch + read every input byte once)"
HM_LOCAL = "hubmerge simple_average, local files"
HM_HUB = "hubmerge simple_average, local Hub (HTTP)"
FUSIONBENCH = "FusionBench SimpleAverageAlgorithm (fusion_bench CLI)"
MK_PYTORCH = "mergekit-pytorch linear (head-less copies)"
MK_YAML = "mergekit-yaml linear"


def rows_cmd(mode: str, *args: object) -> list[str]:
    return [PY, str(HERE / "_rows.py"), mode, *map(str, args)]


def hubmerge_spec(name: str, recipe: Path, out: Path, device: str, *, extra: list[str] | None = None,
                  env: dict[str, str] | None = None, note: str = "") -> Spec:
    return Spec(name, hubmerge_cmd(recipe, out, device, *(extra or [])), env=env, note=note)


def mergekit_config(path: Path, models: list[Path]) -> Path:
    import yaml

    data = {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compare(prefix: str, a: Path, b: Path) -> dict:
    result = subprocess.run(rows_cmd("compare", prefix, a, b), capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout)


def same_files(a: Path, b: Path) -> bool:
    """Every safetensors file of the two outputs (backbone and heads) identical byte for byte."""
    left = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    right = sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    return bool(left) and left == right and all(filecmp.cmp(a / p, b / p, shallow=False) for p in left)


def equality_table(checks: list[tuple[str, dict, str]]) -> str:
    lines = ["| hubmerge output | compared with | tensors | max abs diff | torch.allclose | result |",
             "|---|---|---|---|---|---|"]
    for what, c, against in checks:
        if "error" in c:
            lines.append(f"| {what} | {against} | - | - | - | not compared: {c['error']} |")
            continue
        ok = c["allclose"]
        extra = "" if not c.get("files") else f"; {c['files']}"
        lines.append(
            f"| {what} | {against} | {c['tensors']} (only one side: {c['only_a']}+{c['only_b']}) | "
            f"{c['max_abs_diff']:.3g} | {ok} (rtol={c['rtol']:g}, atol={c['atol']:g}) | "
            f"{'equal' if ok else 'DIFFERENT'}{extra} |"
        )
    return "\n".join(lines)


def ensure_inputs(counts: list[int], cache: Path) -> tuple[Inputs, list[int], list[str]]:
    """generate(max) when the disk allows it; otherwise drop the counts that do not fit and say so."""
    notes = []
    wanted = max([8, *counts])
    names = ["base", *(task_name(i) for i in range(wanted))]
    missing = sum(not (cache / name / ".done").exists() for name in names)
    probe = cache
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if missing and missing * MODEL_BYTES + 2e9 > free:
        fit = max(8, wanted - missing + int((free - 2e9) // MODEL_BYTES))
        dropped = [c for c in counts if c > fit]
        counts = [c for c in counts if c <= fit]
        notes.append(f"disk short ({free / 1e9:.1f} GB free): scaling to {dropped} models skipped")
        wanted = max([8, *counts])
    return generate(wanted, cache), counts, notes


def revision() -> str:
    """The hubmerge commit measured, and whether its package had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hubmerge"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes under hubmerge/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scaling", default="2,4,8,16", help="model counts for the scaling table ('' to skip)")
    parser.add_argument("--skip-peers", action="store_true", help="no FusionBench / mergekit rows")
    parser.add_argument("--skip-hub", action="store_true", help="no local-Hub rows")
    parser.add_argument("--peers-python", type=Path, default=PEERS_PY, help="the peers' venv Python")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "peers.md")
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    if not args.skip_peers and not args.peers_python.exists():
        raise SystemExit(f"{args.peers_python} is missing: run `make bench-peers` (it creates .venv-peers), "
                         "or pass --skip-peers")

    started = datetime.datetime.now().astimezone()
    load = os.getloadavg()
    measured = revision()
    command = " ".join([os.path.relpath(PY, ROOT) if PY.startswith(str(ROOT)) else PY,
                        os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    counts = [int(c) for c in args.scaling.split(",") if c]
    precompile(ROOT / "hubmerge")
    print(f"generating inputs in {args.cache} (once)...", flush=True)
    every, counts, notes = ensure_inputs(counts, args.cache)
    inputs = every.first(8)
    files = [str(f) for f in inputs.files()]
    stripped = headless(inputs) if not args.skip_peers else {}
    work = Path(tempfile.mkdtemp(prefix="hubmerge-bench-peers-"))
    out: dict[str, Path] = {}
    hub_up = contextlib.ExitStack()  # the local Hub: up for the whole main table (idle between its rows)
    try:
        hub = None if args.skip_hub else hub_up.enter_context(HubInputs(inputs, PY))  # uploads once
        warm = files + [str(f) for f in stripped.values()] + ([str(f) for f in hub.files()] if hub else [])
        measure("warm-up", rows_cmd("read-floor", *warm), repeat=1)  # page cache warm
        specs = [
            Spec("import torch", rows_cmd("import-torch")),
            Spec(READ_FLOOR, rows_cmd("read-floor", *files)),
            Spec("load floor (import torch + load every tensor, copied)", rows_cmd("load-floor", *files)),
        ]
        for method, parameters in METHODS:
            recipe = write_recipe(inputs, method, work / f"{method}.yaml", parameters=parameters)
            out[method] = work / f"hubmerge-{method}"
            specs.append(hubmerge_spec(f"hubmerge {method}, local files", recipe, out[method], args.device))
        if hub is not None:
            env = {**hub.env(), "HF_HOME": str(work / "hf-home")}
            for method, parameters in METHODS:
                recipe = write_recipe(inputs, method, work / f"hub-{method}.yaml", parameters=parameters,
                                      endpoint_repos=hub.repos)
                out[f"hub-{method}"] = work / f"hubmerge-hub-{method}"
                specs.append(hubmerge_spec(
                    f"hubmerge {method}, local Hub (HTTP)", recipe, out[f"hub-{method}"], args.device,
                    extra=["--endpoint", hub.endpoint, "--token", hub.token], env=env,
                    note="server in its own process (not counted), on the same cores"))

        if not args.skip_peers:
            peers = str(args.peers_python)
            out["fusionbench"] = work / "fusionbench"
            (work / "fusionbench-run").mkdir()
            specs.append(Spec(
                FUSIONBENCH,
                [peers, str(HERE / "_peers.py"), "fusionbench", str(work / "fusionbench-run"), str(out["fusionbench"]),
                 str(inputs.base), *(f"{t}={p}" for t, p in inputs.models.items())],
                env={"BENCH_FABRIC_ACCELERATOR": "cpu" if args.device == "cpu" else "gpu"},
                note="fusion-bench 0.2.33; typing.override from typing_extensions; "
                     "_pretrained_ as {config_path, pretrained: true}"))
            bin_dir = Path(peers).parent
            device = [] if args.device == "cpu" else ["--device", args.device]
            out["mergekit"] = work / "mergekit-pytorch"
            config = mergekit_config(work / "mergekit-pytorch.yaml", list(stripped.values()))
            specs.append(Spec(MK_PYTORCH, [str(bin_dir / "mergekit-pytorch"), str(config), str(out["mergekit"]),
                                           "--quiet", *device],
                              note="mergekit 0.1.5; classifier.* removed (heads differ in shape)"))
            config = mergekit_config(work / "mergekit-yaml.yaml", list(inputs.models.values()))
            specs.append(Spec(MK_YAML, [str(bin_dir / "mergekit-yaml"), str(config), str(work / "mergekit-yaml"),
                                        "--quiet", *device],
                              expect_failure=True, note="mergekit 0.1.5, the full model dirs"))
        rows = measure_interleaved(specs, repeat=args.repeat)
        hub_up.close()

        report = [
            f"# hubmerge vs FusionBench and mergekit ({started:%Y-%m-%d %H:%M %Z})",
            "",
            f"Machine: {machine()}; load average (1/5/15 min) at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
            f"after the main table {'{:.2f} / {:.2f} / {:.2f}'.format(*os.getloadavg())}"
            + (" (the machine was busy before the run started: other jobs may have run)" if load[0] > 1.0
               else " (the load after it is the benchmark's own)"),
            f"Command: `{command}` (hubmerge {measured})",
            f"Inputs: 1 base + 8 fine-tunes, convnext-base-224 shape, fp32, {inputs.bytes / 1e9:.2f} GB, page cache warm; "
            f"device {args.device}; {args.repeat} run(s) per row, each in its own process, rows round-robin.",
            *(f"Note: {n}" for n in notes),
            "",
            "## 1 base + 8 models",
            "",
            markdown(rows, floor=READ_FLOOR, status=True),
        ]

        checks: list[tuple[str, dict, str]] = []
        if "fusionbench" in out:
            checks.append(("simple_average, local files (backbone `convnext.*`)",
                           compare("convnext.", out["simple_average"], out["fusionbench"]), "FusionBench SimpleAverage"))
            checks.append(("simple_average, local files (backbone `convnext.*`)",
                           compare("convnext.", out["simple_average"], out["mergekit"]), "mergekit-pytorch linear"))
        for method, _ in METHODS:
            if f"hub-{method}" in out:
                c = compare("", out[method], out[f"hub-{method}"])
                if "error" not in c:
                    identical = same_files(out[method], out[f"hub-{method}"])
                    c["files"] = "safetensors files identical" if identical else "safetensors files DIFFER"
                    c["allclose"] = c["allclose"] and identical
                checks.append((f"{method}, local Hub (all tensors, heads included)", c, f"{method}, local files"))
        if checks:
            report += ["", "## Same result", "", equality_table(checks)]

        if counts:
            part_files = {n: [str(f) for f in every.first(n).files()] for n in counts}
            measure("warm-up, scaling inputs", rows_cmd("read-floor", *part_files[max(counts)]), repeat=1)
            specs = []
            for n in counts:
                part = every.first(n)
                recipe = write_recipe(part, "simple_average", work / f"scale{n}.yaml")
                note = f"{part.bytes / 1e9:.2f} GB of inputs"
                specs.append(hubmerge_spec(f"hubmerge simple_average, {n} models", recipe, work / "scale-out",
                                           args.device, note=note))
                specs.append(Spec(f"read floor, {n} models", rows_cmd("read-floor", *part_files[n]), note=note))
            scaling = measure_interleaved(specs, repeat=args.repeat)
            report += ["", "## Scaling: wall grows with the input bytes, private memory stays flat", "",
                       markdown(scaling, floor=f"read floor, {counts[-1]} models")]
            report += ["", "hubmerge / read floor at each size: " + ", ".join(
                f"{n} models {scaling[2 * i].median('wall') / scaling[2 * i + 1].median('wall'):.2f}x"
                for i, n in enumerate(counts) if scaling[2 * i].ok and scaling[2 * i + 1].ok)]

        report += ["", "## Targets", "", targets(rows, checks, scaling if counts else [])]
        text = "\n".join(report) + "\n"
        print("\n" + text)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"written to {os.path.relpath(args.output, Path.cwd())}")
    finally:
        hub_up.close()
        shutil.rmtree(work, ignore_errors=True)


def targets(rows: list[Row], checks: list[tuple[str, dict, str]], scaling: list[Row]) -> str:
    """Each target judged on the medians; the ratio of the fastest runs is shown next to it (noisy machines)."""
    by = {r.name: r for r in rows if r.ok}
    lines = ["| target | measured (medians) | fastest runs | met (medians) |", "|---|---|---|---|"]

    def add(target: str, measured: str, best: str, met: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {best} | {'-' if met is None else ('yes' if met else 'NO')} |")

    def ratio(a: str, b: str) -> tuple[float, float]:
        return by[a].median("wall") / by[b].median("wall"), by[a].span("wall")[0] / by[b].span("wall")[0]

    hm = by.get(HM_LOCAL)
    if hm and READ_FLOOR in by:
        med, best = ratio(HM_LOCAL, READ_FLOOR)
        add("simple_average, local files <= 1.15x the read floor",
            f"{med:.2f}x ({hm.median('wall'):.2f} s vs {by[READ_FLOOR].median('wall'):.2f} s)", f"{best:.2f}x",
            med <= 1.15)
    if hm:
        for name, goal in ((FUSIONBENCH, 3.5), (MK_PYTORCH, 2.5)):
            if name in by:
                med, best = ratio(name, HM_LOCAL)
                add(f"simple_average >= {goal}x faster than {name.split(' (')[0]}", f"{med:.2f}x", f"{best:.2f}x",
                    med >= goal)
        add("simple_average peak private memory <= 0.6 GB", f"{gb(hm.median('peak_anon'))} GB",
            f"max of runs {gb(hm.span('peak_anon')[1])} GB", hm.span("peak_anon")[1] <= 0.6e9)
        if HM_HUB in by:
            same = next((c["allclose"] for what, c, _ in checks if what.startswith("simple_average, local Hub")), None)
            med, best = ratio(HM_HUB, HM_LOCAL)
            add("simple_average from the local Hub <= 1.3x local files, same output",
                f"{med:.2f}x ({by[HM_HUB].median('wall'):.2f} s), output {'identical' if same else 'DIFFERENT'}",
                f"{best:.2f}x", med <= 1.3 and bool(same))
    merges = [r for r in scaling if r.name.startswith("hubmerge") and r.ok]
    if merges:
        private = [r.median("peak_anon") for r in merges]
        add("scaling: peak private memory flat from the fewest to the most models",
            " / ".join(f"{gb(p)}" for p in private) + " GB", "-", max(private) <= 1.25 * min(private))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
