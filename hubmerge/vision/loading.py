"""Load standard models out of merged outputs and inputs: any task's head on the merged backbone.

A merged output holds the backbone once and every task's head under ``heads/<task>/``.
``load_merged`` puts a task's head (and labels) on the backbone and returns a plain transformers
model (or a torchvision ResNet for that family): nothing custom travels with it. ``load_classifier``
does the same for input models, optionally with another model's head (the base backbone with a task
head, say). Loading is strict: a missing or unexpected tensor is an error that names them.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HeadMismatchError, ModelFilesNotFoundError, UnknownTaskError
from ..recipe import ModelRef
from .families import TORCHVISION_FAMILY, Family, detect_family

if TYPE_CHECKING:
    import torch

__all__ = ["load_classifier", "load_merged", "model_labels", "model_tasks", "resolve_model_dir"]

HEADS_DIR = "heads"
_TORCHVISION_LABELS: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()
RECIPE_FILE = "hubmerge_recipe.yaml"
_WEIGHT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
                    RECIPE_FILE]


def resolve_model_dir(
    path_or_repo: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | None = None,
    subfolders: tuple[str, ...] = (),
) -> Path:
    """A local directory holding the model: the path itself, or a Hub snapshot (``org/name[@rev]``).

    Only the files a classifier needs are downloaded (config, weights, processor; and the named
    ``subfolders`` of a merged output, e.g. one task's head).
    """
    ref = ModelRef.parse(str(path_or_repo))
    if ref.path is not None:
        if not ref.path.is_dir():
            raise ModelFilesNotFoundError(f"'{ref.path}' is not a model directory", model=str(ref.path))
        return ref.path
    from huggingface_hub import snapshot_download

    from ..hub.source import hub_errors

    patterns = list(_WEIGHT_PATTERNS) + [f"{folder.rstrip('/')}/*" for folder in subfolders]
    with hub_errors(str(ref.repo_id), revision=revision or ref.revision):
        return Path(snapshot_download(str(ref.repo_id), revision=revision or ref.revision, token=token,
                                      allow_patterns=patterns))


def _read_config(directory: Path) -> dict[str, Any] | None:
    path = directory / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelFilesNotFoundError(f"'{directory}' holds no .safetensors weights", path=str(directory))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


def _family(directory: Path, config: Mapping[str, Any] | None, names: Any) -> Family:
    return detect_family(config, names, where=str(directory))


def _build(family: Family, config: Mapping[str, Any]) -> torch.nn.Module:
    """An empty model of ``family`` shaped by ``config``, on the meta device (no time spent initialising)."""
    import torch

    with torch.device("meta"):
        if family.name == TORCHVISION_FAMILY:
            import torchvision

            architecture = config.get("architecture")
            builder = getattr(torchvision.models, str(architecture), None)
            if builder is None:
                raise ModelFilesNotFoundError(f"config names an unknown torchvision architecture {architecture!r}")
            classes = len(config["id2label"]) if config.get("id2label") else int(config["num_classes"])
            return builder(weights=None, num_classes=classes)
        from transformers import AutoConfig, AutoModelForImageClassification

        values = dict(config)
        built = AutoConfig.for_model(values.pop("model_type"), **values)
        return AutoModelForImageClassification.from_config(built)


def _load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> torch.nn.Module:
    """Fill a meta-device model with ``state``; every tensor must be named, none may be left over."""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    shapes = sorted(k for k in expected & set(state) if tuple(model.state_dict()[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise HeadMismatchError(
            where,
            f"the weights do not fit the model: missing {missing[:8] or 'none'}, unexpected {unexpected[:8] or 'none'}, "
            f"wrong shape {shapes[:8] or 'none'}",
        )
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model.eval()


def _compose(backbone_dir: Path, head_dir: Path | None, *, where: str) -> torch.nn.Module:
    """The model in ``backbone_dir``, with the head tensors and labels of ``head_dir`` when given."""
    state = _state_dict(backbone_dir)
    config = _read_config(backbone_dir)
    family = _family(backbone_dir, config, state)
    if head_dir is not None:
        head_config = _read_config(head_dir)
        head_state = _state_dict(head_dir)
        if family.head_weight not in head_state:
            raise HeadMismatchError(where, f"'{head_dir}' holds no '{family.head_weight}' to use as a head")
        state = {k: v for k, v in state.items() if not family.is_head(k)}
        state.update({k: v for k, v in head_state.items() if family.is_head(k)})
        config = dict(config or {})
        for key in ("id2label", "label2id", "num_classes"):
            if head_config and key in head_config:
                config[key] = head_config[key]
        if not head_config or "id2label" not in head_config:
            rows = head_state[family.head_weight].shape[0]
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(rows)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(rows)}
    if config is None and family.name == TORCHVISION_FAMILY:
        from .families import torchvision_architecture

        config = {"architecture": torchvision_architecture(state), "num_classes": state[family.head_weight].shape[0]}
    if config is None:
        raise ModelFilesNotFoundError(f"'{backbone_dir}' has no config.json", path=str(backbone_dir))
    config = dict(config)
    config.pop("hubmerge_head", None)
    config.pop("hubmerge_family", None)
    model = _load_strict(_build(family, config), state, where)
    if family.name == TORCHVISION_FAMILY:  # torchvision models carry no labels: remember them here
        _TORCHVISION_LABELS[model] = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    return model


def model_tasks(path_or_repo: str | os.PathLike[str], *, revision: str | None = None, token: str | None = None) -> list[str]:
    """The tasks a merged output carries (``heads/<task>/``), in recipe order; [] for a plain model."""
    ref = ModelRef.parse(str(path_or_repo))
    if ref.path is not None:
        heads = ref.path / HEADS_DIR
        found = sorted(p.name for p in heads.iterdir() if (p / "config.json").exists()) if heads.is_dir() else []
        recipe_file = ref.path / RECIPE_FILE
    else:
        from huggingface_hub import HfApi

        from ..hub.source import hub_errors

        with hub_errors(str(ref.repo_id), revision=revision or ref.revision):
            files = HfApi(token=token).list_repo_files(str(ref.repo_id), revision=revision or ref.revision)
        found = sorted({f.split("/")[1] for f in files if f.startswith(f"{HEADS_DIR}/") and f.endswith("/config.json")})
        recipe_file = None
        if RECIPE_FILE in files:
            recipe_file = resolve_model_dir(path_or_repo, revision=revision, token=token) / RECIPE_FILE
    if recipe_file is not None and recipe_file.exists():
        from ..recipe import load_recipe

        order = load_recipe(recipe_file).tasks
        found = [t for t in order if t in found] + [t for t in found if t not in order]
    return found


def _default_task(directory: Path, tasks: list[str]) -> str:
    recipe_file = directory / RECIPE_FILE
    if recipe_file.exists():
        from ..recipe import load_recipe

        default = load_recipe(recipe_file).resolved_default_task
        if default:
            return default
    return tasks[0]


def load_merged(
    path_or_repo: str | os.PathLike[str],
    task: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> torch.nn.Module:
    """A standard model for ``task`` from a merged output: the merged backbone with that task's head.

    Args:
        path_or_repo: an output directory of ``hubmerge merge``, or a Hub repo ``org/name[@revision]``.
        task: which head; default: the output's default task.
        revision, token: for Hub repos.

    Returns:
        A transformers ``*ForImageClassification`` (``.logits``, ``config.id2label``) in eval mode,
        or a torchvision ResNet for that family.

    Raises:
        UnknownTaskError: ``task`` is not one of the output's tasks (they are listed).
        HeadMismatchError: the head's tensors do not fit the model (names missing/unexpected).

    Example:
        >>> model = load_merged("out/merged", task="mnist")
    """
    tasks = model_tasks(path_or_repo, revision=revision, token=token)
    if not tasks:
        raise UnknownTaskError(str(task), [], hint=f"'{path_or_repo}' holds no heads/<task>/: is it a hubmerge output?")
    directory = resolve_model_dir(path_or_repo, revision=revision, token=token,
                                  subfolders=tuple(f"{HEADS_DIR}/{t}" for t in ([task] if task in tasks else [])))
    chosen = task or _default_task(directory, tasks)
    if chosen not in tasks:
        raise UnknownTaskError(chosen, tasks, hint=f"(the tasks of {path_or_repo})")
    head_dir = directory / HEADS_DIR / chosen
    if not head_dir.is_dir():
        directory = resolve_model_dir(path_or_repo, revision=revision, token=token, subfolders=(f"{HEADS_DIR}/{chosen}",))
        head_dir = directory / HEADS_DIR / chosen
    return _compose(directory, head_dir, where=chosen)


def load_classifier(
    model: str | os.PathLike[str],
    *,
    head_from: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> torch.nn.Module:
    """A plain model directory or repo as a classifier; with ``head_from``, wearing that model's head.

    Args:
        model: the backbone's model (a fine-tune, or the base), ``path`` or ``org/name[@revision]``.
        head_from: take the head tensors and labels from this model instead (same family).
        revision, token: for Hub repos (``revision`` applies to ``model``).

    Example:
        >>> base_with_mnist_head = load_classifier("facebook/convnext-base-224", head_from="org/convnext-mnist")
    """
    backbone = resolve_model_dir(model, revision=revision, token=token)
    head = resolve_model_dir(head_from, token=token) if head_from is not None else None
    return _compose(backbone, head, where=str(head_from or model))


def model_labels(model: torch.nn.Module) -> dict[int, str]:
    """id2label of a loaded classifier (its transformers config; for torchvision, the output's labels)."""
    if model in _TORCHVISION_LABELS and _TORCHVISION_LABELS[model]:
        return dict(_TORCHVISION_LABELS[model])
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "id2label", None):
        return {int(k): str(v) for k, v in config.id2label.items()}
    out_features = getattr(getattr(model, "fc", None), "out_features", None)
    return {i: f"LABEL_{i}" for i in range(out_features or 0)}
