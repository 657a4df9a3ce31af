"""Tiny random models of the real classes, for engine and IO tests (trained ones live in hubmerge.fixtures).

A "family" is a base model plus fine-tunes that differ from it by small seeded perturbations of the
backbone and carry heads of their own sizes, like real per-task fine-tunes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONVNEXT_KW = dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], image_size=32, patch_size=2, num_channels=3)
RESNET_KW = dict(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def save_model(kind: str, path: Path, *, seed: int, num_labels: int, max_shard_size: str | None = None) -> Path:
    """A randomly initialised tiny ConvNeXt / ResNet classifier saved like a Hub repo."""
    _quiet()
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
    )

    torch.manual_seed(seed)
    labels = {i: f"class_{i}" for i in range(num_labels)}
    if kind == "convnext":
        config = ConvNextConfig(**CONVNEXT_KW, num_labels=num_labels, id2label=labels, label2id={v: k for k, v in labels.items()})
        model = ConvNextForImageClassification(config)
    else:
        config = ResNetConfig(**RESNET_KW, num_labels=num_labels, id2label=labels, label2id={v: k for k, v in labels.items()})
        model = ResNetForImageClassification(config)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}}))
    return path


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model (single file or shards)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def derive(base: Path, out: Path, *, seed: int, num_labels: int, scale: float = 0.05, backbone: str = "",
           int_value: int | None = None) -> Path:
    """A 'fine-tune' of ``base``: backbone floats perturbed by seeded noise, a head of ``num_labels``."""
    kind = "convnext" if (base / "config.json").read_text().find("convnext") >= 0 else "resnet"
    save_model(kind, out, seed=seed + 1000, num_labels=num_labels)
    tensors = state_dict(base)
    own = state_dict(out)
    generator = torch.Generator().manual_seed(seed)
    for name, value in tensors.items():
        if name.startswith(backbone) and name in own and own[name].shape == value.shape:
            if value.is_floating_point():
                own[name] = value + scale * torch.randn(value.shape, generator=generator)
            elif int_value is not None:
                own[name] = torch.full_like(value, int_value)
    for file in out.glob("*.safetensors"):
        file.unlink()
    (out / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(own, out / "model.safetensors", metadata={"format": "pt"})
    return out


@dataclass(frozen=True)
class Family:
    base: Path
    models: dict[str, Path]
    backbone: str


# Heads of 6000 classes make each fine-tune ~0.5 MB, past the 256 KB a Hub source keeps from its header
# read (hubmerge.hub.source): its tensors are then read by ranged HTTP requests, where faults can hit.
STREAMED_HEADS = {"alpha": 6000, "beta": 6000, "gamma": 6000}


def make_family(root: Path, kind: str = "convnext", *, heads: dict[str, int] | None = None) -> Family:
    heads = heads or {"alpha": 3, "beta": 5, "gamma": 4}
    backbone = "convnext" if kind == "convnext" else "resnet"
    base = save_model(kind, root / "base", seed=0, num_labels=10)
    models = {
        task: derive(base, root / task, seed=i + 1, num_labels=n, backbone=backbone, int_value=(i + 1) * 7)
        for i, (task, n) in enumerate(heads.items())
    }
    return Family(base, models, backbone)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative path: two merges are identical when these are equal."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def cache_snapshot(model: Path, cache: Path, *, commit: str = "0" * 40) -> Path:
    """``model`` as huggingface_hub's cache holds repo ``org/<its folder name>``: files in ``snapshots/<commit>/``
    are symlinks into ``../../blobs/``, as in the paths ``snapshot_download()`` returns."""
    import os
    import shutil

    repo = cache / f"models--org--{model.name}"
    folder = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    folder.mkdir(parents=True)
    for file in model.iterdir():
        shutil.copy(file, repo / "blobs" / file.name)
        (folder / file.name).symlink_to(os.path.relpath(repo / "blobs" / file.name, folder))
    return folder


def upload_family(family: Family, endpoint: str, token: str, *, prefix: str, private: bool = False) -> dict[str, str]:
    """The family as the token owner's (alice's) Hub repos, uniquely named; returns {model dir name: repo id}."""
    import uuid

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    tag = uuid.uuid4().hex[:6]
    repos = {}
    for path in [family.base, *family.models.values()]:
        repo_id = f"alice/{prefix}{path.name}-{tag}"
        api.create_repo(repo_id, private=private)
        api.upload_folder(folder_path=path, repo_id=repo_id)
        repos[path.name] = repo_id
    return repos


def write_recipe(path: Path, family: Family, method: str, *, parameters: dict | None = None,
                 target: bool = True, base: bool = True, extra: dict | None = None) -> Path:
    import yaml

    data: dict = {"method": method, "parameters": parameters or {}}
    if base:
        data["base_model"] = str(family.base)
    data["models"] = [{"model": str(p), "task": t} for t, p in family.models.items()]
    if target:
        data["target_modules"] = [family.backbone]
    data.update(extra or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
