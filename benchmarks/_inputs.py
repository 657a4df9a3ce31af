"""Benchmark inputs: 1 base + N fine-tunes of the real facebook/convnext-base-224 shape, generated once.

ConvNextConfig(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3]) has the same 88M
parameters, tensor names and file layout as the Hub checkpoint; the fine-tunes are the base plus
seeded noise on the backbone with heads of the FusionBench 8-task sizes. Weights are random: speed
and memory do not depend on their values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

TASKS = [
    ("sun397", 397),
    ("stanford-cars", 196),
    ("resisc45", 45),
    ("eurosat", 10),
    ("svhn", 10),
    ("gtsrb", 43),
    ("mnist", 10),
    ("dtd", 47),
]
CONFIG = dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], image_size=224, patch_size=4)
DEFAULT_CACHE = Path(os.environ.get("HUBMERGE_BENCH_CACHE", Path.home() / ".cache" / "hubmerge" / "bench"))


@dataclass(frozen=True)
class Inputs:
    root: Path
    base: Path
    models: dict[str, Path]

    def files(self) -> list[Path]:
        return [f for d in [self.base, *self.models.values()] for f in sorted(d.glob("*.safetensors"))]

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files())


def task_name(i: int) -> str:
    """The i-th fine-tune: the 8 FusionBench tasks, then copies with a suffix for scaling runs."""
    name, _ = TASKS[i % len(TASKS)]
    return name if i < len(TASKS) else f"{name}-{i // len(TASKS)}"


def generate(n_models: int = 8, cache: Path = DEFAULT_CACHE) -> Inputs:
    """Create (once) the base and ``n_models`` fine-tunes under ``cache``; return their paths."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import ConvNextConfig, ConvNextForImageClassification
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    cache.mkdir(parents=True, exist_ok=True)
    base = cache / "base"
    if not (base / ".done").exists():
        torch.manual_seed(0)
        model = ConvNextForImageClassification(ConvNextConfig(**CONFIG, num_labels=1000))
        model.save_pretrained(base)
        (base / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_normalize": True,
            "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 224},
        }))
        (base / ".done").touch()
    models: dict[str, Path] = {}
    base_tensors = None
    for i in range(n_models):
        task = task_name(i)
        labels = TASKS[i % len(TASKS)][1]
        target = cache / task
        models[task] = target
        if (target / ".done").exists():
            continue
        if base_tensors is None:
            base_tensors = load_file(base / "model.safetensors")
        generator = torch.Generator().manual_seed(i + 1)
        tensors = {}
        for name, value in base_tensors.items():
            if name.startswith("classifier."):
                continue
            if value.is_floating_point():
                tensors[name] = value + 0.01 * torch.randn(value.shape, generator=generator)
            else:
                tensors[name] = value.clone()
        tensors["classifier.weight"] = 0.02 * torch.randn(labels, 1024, generator=generator)
        tensors["classifier.bias"] = torch.zeros(labels)
        target.mkdir(parents=True, exist_ok=True)
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
        config = json.loads((base / "config.json").read_text())
        config["id2label"] = {str(k): f"{task}_{k}" for k in range(labels)}
        config["label2id"] = {f"{task}_{k}": k for k in range(labels)}
        config.pop("num_labels", None)
        (target / "config.json").write_text(json.dumps(config, indent=2))
        (target / "preprocessor_config.json").write_text((base / "preprocessor_config.json").read_text())
        (target / ".done").touch()
    return Inputs(cache, base, models)


def write_recipe(inputs: Inputs, method: str, path: Path, *, parameters: dict | None = None,
                 endpoint_repos: dict[str, str] | None = None) -> Path:
    """A hubmerge recipe over these inputs (local paths, or repo ids when ``endpoint_repos`` maps them)."""
    import yaml

    def ref(p: Path) -> str:
        return endpoint_repos[p.name] if endpoint_repos else str(p)

    data = {
        "method": method,
        "parameters": parameters or {},
        "base_model": ref(inputs.base),
        "models": [{"model": ref(p), "task": t} for t, p in inputs.models.items()],
        "target_modules": ["convnext"],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
