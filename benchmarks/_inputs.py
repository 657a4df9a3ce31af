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

    def first(self, n: int) -> "Inputs":
        """The base and the first ``n`` fine-tunes (scaling rows)."""
        return Inputs(self.root, self.base, dict(list(self.models.items())[:n]))


def task_name(i: int) -> str:
    """The i-th fine-tune: the 8 FusionBench tasks, then copies with a suffix for scaling runs."""
    name, _ = TASKS[i % len(TASKS)]
    return name if i < len(TASKS) else f"{name}-{i // len(TASKS)}"


def generate(n_models: int = 8, cache: Path = DEFAULT_CACHE) -> Inputs:
    """Create (once) the base and ``n_models`` fine-tunes under ``cache``; return their paths.

    They are made in a process of their own: the benchmark's rows are its children, and a child's peak RSS
    (``ru_maxrss``) starts from its parent's at the fork, so a parent that had held the models (2 GB) put
    that into every row, ``import torch`` included.
    """
    import subprocess
    import sys

    missing = [cache / name for name in ("base", *(task_name(i) for i in range(n_models)))
               if not (cache / name / ".done").exists()]
    if missing:
        subprocess.run([sys.executable, __file__, str(n_models), str(cache)], check=True)
    return Inputs(cache, cache / "base", {task_name(i): cache / task_name(i) for i in range(n_models)})


def _generate_here(n_models: int, cache: Path) -> None:
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
    base_tensors = None
    for i in range(n_models):
        task = task_name(i)
        labels = TASKS[i % len(TASKS)][1]
        target = cache / task
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


def headless(inputs: Inputs) -> dict[str, Path]:
    """Copies (made once, next to the inputs) of each fine-tune without its ``classifier.*`` head.

    ``mergekit-pytorch`` merges every tensor of its inputs and fails on heads of different shapes;
    it is given these single-file backbones instead. Returns task -> the copy's safetensors file.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    out: dict[str, Path] = {}
    for task, source in inputs.models.items():
        target = inputs.root / "headless" / task
        out[task] = target / "model.safetensors"
        if (target / ".done").exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        with safe_open(str(source / "model.safetensors"), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys() if not k.startswith("classifier.")}
        save_file(tensors, out[task], metadata={"format": "pt"})
        (target / ".done").touch()
    return out


HUB_TOKEN = "hf_bench_local_token"
HUB_USER = "bench"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HubInputs:
    """``hubmerge hub serve`` in a subprocess over ``<cache>/localhub``, holding the inputs (uploaded once).

        with HubInputs(inputs, python) as hub:
            write_recipe(inputs, method, path, endpoint_repos=hub.repos)
            ... hubmerge merge path --endpoint hub.endpoint --token hub.token

    The upload goes through huggingface_hub's ``HfApi.upload_folder`` (with ``HF_HUB_DISABLE_XET=1``:
    the local Hub speaks plain LFS) in a child process of ``python``; a restart on the same root
    keeps the repos, so later runs only check that they are there.
    """

    def __init__(self, inputs: Inputs, python: str, root: Path | None = None) -> None:
        self.inputs = inputs
        self.python = python
        self.root = root or inputs.root / "localhub"
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token = HUB_TOKEN
        self.repos = {p.name: f"{HUB_USER}/{p.name}" for p in [inputs.base, *inputs.models.values()]}
        self.process = None
        self.log = None

    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": self.token,
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def __enter__(self) -> "HubInputs":
        import socket
        import subprocess
        import time

        self.root.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root.parent / "localhub.log", "ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "hubmerge.cli", "hub", "serve", "--root", str(self.root), "--port", str(self.port),
             "--token", f"{self.token}:{HUB_USER}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"hubmerge hub serve did not start; see {self.log.name}")
                time.sleep(0.2)
        self.upload()
        return self

    def upload(self) -> None:
        import json
        import subprocess

        folders = {self.repos[p.name]: str(p) for p in [self.inputs.base, *self.inputs.models.values()]}
        script = (
            "import json, sys\n"
            "from huggingface_hub import HfApi\n"
            "api = HfApi(endpoint=sys.argv[1], token=sys.argv[2])\n"
            "for repo, folder in json.loads(sys.argv[3]).items():\n"
            "    if api.repo_exists(repo) and api.file_exists(repo, 'model.safetensors'):\n"
            "        continue\n"
            "    print('uploading', folder, 'to', repo, flush=True)\n"
            "    api.create_repo(repo, exist_ok=True)\n"
            "    api.upload_folder(repo_id=repo, folder_path=folder, ignore_patterns=['.done'])\n"
        )
        subprocess.run([self.python, "-c", script, self.endpoint, self.token, json.dumps(folders)], check=True,
                       env={**os.environ, **self.env()})

    def files(self) -> list[Path]:
        """The stored blobs the server reads (to warm the page cache like the local files)."""
        return [f for f in self.root.rglob("*") if f.is_file() and f.stat().st_size > 2**20]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()


if __name__ == "__main__":  # what generate runs: python _inputs.py N_MODELS CACHE
    import sys

    _generate_here(int(sys.argv[1]), Path(sys.argv[2]))
