"""Evaluation throughput: hubmerge's ``evaluate_model`` against a direct loop on the same data and model.

Data: ``--images`` JPEG images of varied sizes (48 to 400 px a side, both orientations, smooth colour fields
as photos are, not noise) with integer labels 0-9, as a ``datasets`` split saved with ``save_to_disk`` (made
once under ``$HUBMERGE_BENCH_CACHE/eval-data-N``). Models: the tiny ConvNeXt fixture (``digits_rotated``, 10
classes, 32x32 input) and a ConvNeXt of facebook/convnext-base-224's sizes (``_inputs``'s ``eurosat``
fine-tune, random weights, 224x224 input) on the first ``--base-images`` of the images: speed does not
depend on the weights' values.

Rows, each its own process (``_measure``), ``--repeat`` times round-robin, medians:

* hubmerge: ``evaluate_model(model, {"t": data}, device="cpu")``, its defaults (DataLoader workers).
* direct loop: the model's image processor on batches of 64 in the main process, ``torch.inference_mode()``,
  the forward, argmax and the cross-entropy in torch: no DataLoader, no ``evaluate`` metric.

images/s counts the evaluation itself, from before the model's load to the result (what a user waits for
once Python and torch are imported); wall and peak RSS are the whole process's. Both rows must agree on
accuracy, and on the loss to 1e-6 (the direct loop sums it in float32).

    python benchmarks/bench_eval.py [--repeat 3] [--images 3000] [--base-images 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _inputs import DEFAULT_CACHE, generate  # noqa: E402
from _measure import Row, Spec, gb, measure_interleaved, precompile  # noqa: E402

HERE = Path(__file__).parent
PY = sys.executable
BATCH = 64


# ---------------------------------------------------------------------------- data (its own process)


def make_data(path: Path, n: int) -> None:
    """``n`` JPEG images of varied sizes and labels 0-9, saved with ``save_to_disk`` at ``path``."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(48, 401, size=2))
        field = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        buffer = io.BytesIO()
        field.save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": None})
        labels.append(int(rng.integers(0, 10)))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    partial = path.with_name(path.name + ".partial")
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(partial))
    partial.rename(path)


def data_dir(cache: Path, n: int) -> Path:
    path = cache / f"eval-data-{n}"
    if not path.exists():
        subprocess.run([PY, __file__, "--make-data", str(path), "--images", str(n)], check=True)
    return path


# ---------------------------------------------------------------------------- the rows (each its own process)


def _imports() -> None:
    """What both rows import before their clock starts: the libraries' import is no part of the throughput."""
    import datasets  # noqa: F401
    import evaluate  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoImageProcessor, AutoModelForImageClassification  # noqa: F401


def _cpu() -> float:
    """CPU seconds so far of this process and its reaped children (the DataLoader's workers): on a shared
    machine a steadier measure of the work done than the wall clock."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def row_hubmerge(model: str, data: str, limit: int, workers: int | None = None) -> dict[str, float]:
    from hubmerge.evaluation import evaluate_model

    started, cpu = time.perf_counter(), _cpu()
    report = evaluate_model(model, {"t": f"{data}:train"}, device="cpu", max_samples=limit, num_workers=workers)
    seconds = time.perf_counter() - started
    result = report.results["t"]
    return {"seconds": seconds, "cpu": _cpu() - cpu, "images": result.num_samples, "accuracy": result.accuracy,
            "loss": result.loss}


def row_direct(model_dir: str, data: str, limit: int) -> dict[str, float]:
    import datasets
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    started, cpu = time.perf_counter(), _cpu()
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    split = datasets.load_from_disk(data)
    if limit < len(split):  # the same subset as hubmerge's max_samples (seed 0, kept in order)
        split = split.select(np.sort(np.random.default_rng(0).choice(len(split), size=limit, replace=False)).tolist())
    correct, loss, count = 0, 0.0, 0
    with torch.inference_mode():
        for batch in split.iter(batch_size=BATCH):
            pixels = processor(images=[im.convert("RGB") for im in batch["image"]], return_tensors="pt")["pixel_values"]
            labels = torch.tensor(batch["label"])
            logits = model(pixels).logits.double()
            correct += int((logits.argmax(-1) == labels).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": _cpu() - cpu, "images": count, "accuracy": correct / count, "loss": loss / count}


# ---------------------------------------------------------------------------- harness


def results(row: Row) -> list[dict[str, float]]:
    return [json.loads(run.output.strip().splitlines()[-1]) for run in row.runs if run.returncode == 0]


def table(rows: list[Row]) -> str:
    lines = ["| row | images | images/s, median (min-max) | eval s, median | CPU s per 100 images, median | wall s, median | peak RSS GB, median "
             "| accuracy | loss |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        found = results(row)
        if not found:
            lines.append(f"| {row.name} | failed | | | | | | | |")
            continue
        rates = [r["images"] / r["seconds"] for r in found]
        lines.append(
            f"| {row.name} | {found[0]['images']} | {statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) "
            f"| {statistics.median(r['seconds'] for r in found):.2f} "
            f"| {statistics.median(100 * r['cpu'] / r['images'] for r in found):.2f} | {row.median('wall'):.2f} "
            f"| {gb(row.median('peak_rss'))} | {found[0]['accuracy']:.6f} | {found[0]['loss']:.6f} |"
        )
    return "\n".join(lines)


def check_agree(rows: list[Row]) -> None:
    """Every run of every row gives the same accuracy and (to 1e-6) loss."""
    found = [r for row in rows for r in results(row)]
    if any(r["accuracy"] != found[0]["accuracy"] or abs(r["loss"] - found[0]["loss"]) > 1e-6 for r in found):
        raise SystemExit("the rows disagree on the results: " + json.dumps(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--base-images", type=int, default=128)
    parser.add_argument("--workers", default="", help="also hubmerge rows with these num_workers, e.g. '0,1'")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the rows (torch's intra-op threads): "
                        "1 makes CPU s a measure of the work on a shared machine, where threads that wait for "
                        "each other spin")
    parser.add_argument("--baseline", type=Path, help="also a hubmerge row run from this checkout (PYTHONPATH), "
                        "e.g. a worktree of the commit before a change, interleaved with the others")
    parser.add_argument("--skip-base", action="store_true", help="only the tiny model's rows")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--make-data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--row", nargs=4, metavar=("KIND", "MODEL", "DATA", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_data:
        make_data(args.make_data, args.images)
        return
    if args.row:
        kind, model, data, limit = args.row
        _imports()
        if kind == "direct":
            print(json.dumps(row_direct(model, data, int(limit))))
        else:  # hubmerge, or hubmerge:N for N DataLoader workers
            workers = kind.partition(":")[2]
            print(json.dumps(row_hubmerge(model, data, int(limit), int(workers) if workers else None)))
        return

    import os

    precompile(HERE.parent / "hubmerge")
    data = data_dir(args.cache, args.images)
    # built in a process of its own: a row's peak RSS starts from this one's (see _inputs.generate)
    tiny = subprocess.run([PY, "-c", "from hubmerge.fixtures import build_fixtures; "
                           "print(build_fixtures().models['digits_rotated'])"],
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    base = generate(4, args.cache).models["eurosat"]
    print(f"{os.cpu_count()} cores; data {data}; tiny {tiny}; base {base}", flush=True)
    kinds = ["hubmerge", *(f"hubmerge:{n}" for n in args.workers.split(",") if n), "direct"]
    models = [("tiny ConvNeXt (32x32)", tiny, args.images)]
    if not args.skip_base:
        models.append(("ConvNeXt-base sizes (224x224)", base, args.base_images))
    for label, model, limit in models:
        env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        row = [PY, __file__, "--row", "KIND", str(model), str(data), str(limit)]
        specs = [Spec(f"{kind}, {label}", [kind if a == "KIND" else a for a in row], env) for kind in kinds]
        if args.baseline:
            specs.insert(0, Spec(f"hubmerge at {args.baseline.name}, {label}", [*row[:3], "hubmerge", *row[4:]],
                                 {**env, "PYTHONPATH": str(args.baseline.resolve())}))
        rows = measure_interleaved(specs, repeat=args.repeat)
        print(table(rows), flush=True)
        check_agree(rows)


if __name__ == "__main__":
    main()
