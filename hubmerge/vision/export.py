"""Write torchvision ResNets as hubmerge-readable model directories (safetensors + a small config).

hubmerge reads safetensors only; a torchvision model directory is ``model.safetensors`` holding the
state dict under torchvision's names (int64 ``num_batches_tracked`` buffers included) and a
``config.json`` saying ``{"hubmerge_family": "torchvision-resnet", "architecture": "resnet50",
"num_classes": N, "id2label": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import (
    HeadMismatchError,
    ModelFilesNotFoundError,
    OutputNotOursError,
    RecipeError,
    UnsupportedArchitectureError,
    WeightsError,
)
from .families import TORCHVISION_ARCHITECTURES, TORCHVISION_FAMILY, torchvision_architecture

if TYPE_CHECKING:
    import torch

__all__ = ["TORCHVISION_ARCHITECTURES", "export_torchvision_resnet"]


def export_torchvision_resnet(
    architecture: str,
    out_dir: str | Path,
    *,
    weights: Literal["DEFAULT"] | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    id2label: Mapping[int, str] | None = None,
) -> Path:
    """Create a torchvision ResNet model directory hubmerge can merge and ``load_merged`` can load.

    Args:
        architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.
        out_dir: the directory to write (created; files in it are replaced).
        weights: ``"DEFAULT"`` for torchvision's ImageNet weights (downloaded by torchvision, so it
            needs internet), or None for a random initialisation.
        checkpoint: a fine-tuned state dict saved with ``torch.save`` (as FusionBench's torchvision
            pool saves its models), read without unpickling code; its head sets ``num_classes``.
            Instead of ``weights``.
        num_classes: the head size (default: ``len(id2label)``, else the architecture's 1000); with
            ImageNet weights and another size, the head is replaced by a new ``nn.Linear`` of that
            size (as FusionBench's pool does for a dataset).
        id2label: labels for the head, one per class (default ``LABEL_i``).

    Returns:
        ``out_dir``, holding ``model.safetensors`` (torchvision's state-dict names, int64
        ``num_batches_tracked`` included) and ``config.json``.

    Raises:
        UnsupportedArchitectureError: an architecture other than the five ResNets.
        HeadMismatchError: ``id2label`` does not have one label per class.
        RecipeError: ``weights`` is neither ``"DEFAULT"`` nor None, or comes with a ``checkpoint``.
        OutputNotOursError: ``out_dir`` is a file (checked before any work).
        WeightsError: the ImageNet weights could not be downloaded (offline: use ``weights=None``), or
            the checkpoint is missing, is no state dict, does not fit the architecture, or has a head of
            another size than ``num_classes``.

    Example:
        >>> out = export_torchvision_resnet("resnet18", "models/r18-digits", num_classes=10)
        >>> sorted(path.name for path in out.iterdir())
        ['config.json', 'model.safetensors']
        >>> out = export_torchvision_resnet("resnet18", "models/r18-cars", checkpoint="resnet18_cars.pth")
    """
    import torch
    import torchvision
    from safetensors.torch import save_file

    if architecture not in TORCHVISION_ARCHITECTURES:
        raise UnsupportedArchitectureError(f"torchvision '{architecture}'", TORCHVISION_ARCHITECTURES)
    if weights not in ("DEFAULT", None):
        raise RecipeError(f"weights must be 'DEFAULT' (ImageNet) or None, got {weights!r}", field="weights")
    if weights is not None and checkpoint is not None:
        raise RecipeError("give weights='DEFAULT' or a checkpoint, not both: the checkpoint replaces every weight",
                          field="weights")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # mkdir's FileExistsError, untyped, came once the model was built
        raise OutputNotOursError(str(out), "config.json", is_file=True)
    state = _read_checkpoint(Path(checkpoint)) if checkpoint is not None else None
    size_from = "the labels"  # what set the head's size, for an error about labels that do not fit it
    if state is not None and "fc.weight" in state:
        trained = int(state["fc.weight"].shape[0])  # the trained head's size: labels must fit it
        if num_classes is not None and num_classes != trained:
            raise WeightsError(f"checkpoint '{checkpoint}' has a head of {trained} classes, not num_classes="
                               f"{num_classes}; leave num_classes out, the checkpoint says it")
        num_classes, size_from = trained, "the checkpoint's head"
    elif num_classes is not None:
        size_from = "num_classes"
    elif id2label is not None:
        num_classes = len(id2label)
    builder = getattr(torchvision.models, architecture)
    try:
        model = builder(weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise WeightsError(
            f"could not download torchvision's ImageNet weights for {architecture} ({exc}). "
            "Connect to the internet, or leave the ImageNet weights out (no --imagenet; weights=None from "
            "Python) for a randomly initialised model."
        ) from None
    if num_classes is not None and num_classes != model.fc.out_features:
        model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    if state is not None:
        problems = _misfit(model, state)
        if problems:
            found = torchvision_architecture(state)  # another ResNet's checkpoint: say which, not only its tensors
            hint = f" (it is a {found} checkpoint: export it as {found})" if found not in (None, architecture) else ""
            raise WeightsError(f"checkpoint '{checkpoint}' does not fit torchvision {architecture}{hint}: {problems}")
        model.load_state_dict(state)
    classes = model.fc.out_features
    labels = {int(k): str(v) for k, v in (id2label or {i: f"LABEL_{i}" for i in range(classes)}).items()}
    if sorted(labels) != list(range(classes)):
        given = (f"{len(labels)} labels were given" if len(labels) != classes
                 else f"the labels are numbered {min(labels)}..{max(labels)}")
        raise HeadMismatchError(None, f"the {architecture} head has {classes} classes ({size_from}), but {given}; "
                                f"give one label per class 0..{classes - 1}, in class order")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = {
        "hubmerge_family": TORCHVISION_FAMILY,
        "architecture": architecture,
        "num_classes": classes,
        "id2label": {str(k): v for k, v in sorted(labels.items())},
        "label2id": {v: k for k, v in sorted(labels.items())},
        "weights": weights,
        **({"checkpoint": Path(checkpoint).name} if checkpoint is not None else {}),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict (also under ``"state_dict"``, with DataParallel's ``module.`` prefix, or under
    the attribute of a LightningModule holding the network), loaded with ``weights_only=True``: a checkpoint
    cannot run code."""
    import pickle
    import struct

    import torch

    if not path.is_file():
        raise ModelFilesNotFoundError(f"checkpoint '{path}' does not exist", path=str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, struct.error, RuntimeError, EOFError, OSError, KeyError, IndexError,
            ValueError, AssertionError) as exc:  # struct.error: a legacy-format checkpoint cut short;
        # AssertionError: one whose key list names a storage its pickle lacks (torch asserts they agree)
        raise WeightsError(  # garbage makes the weights-only unpickler fail in many ways, not only UnpicklingError
            f"checkpoint '{path}' cannot be read as a state dict ({_load_failure(exc)}); save one with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint '{path}' holds no state dict of tensors; save model.state_dict()"
                           + _nested_state_hint(state))
    return _unwrapped({k.removeprefix("module."): v for k, v in state.items()})


def _unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the one attribute name every tensor is under (a LightningModule's ``self.model``
    saves ``model.conv1.weight``), when the ResNet's own names are below it; otherwise as it is."""
    outer = {name.split(".", 1)[0] for name in state}
    if "conv1.weight" in state or len(outer) != 1 or f"{next(iter(outer))}.conv1.weight" not in state:
        return state
    return {name.split(".", 1)[1]: tensor for name, tensor in state.items()}


def _nested_state_hint(checkpoint: object) -> str:
    """Where a trainer's dict keeps its state dict (``{"model": ..., "epoch": 3}``), as advice to save that
    entry alone: only ``"state_dict"`` is taken as it is, since other keys may hold an optimizer's state."""
    import torch

    if not isinstance(checkpoint, Mapping):
        return ""
    keys = [str(key) for key, value in checkpoint.items() if isinstance(value, Mapping) and value
            and all(isinstance(v, torch.Tensor) for v in value.values())]
    return (f" (its '{keys[0]}' entry is one: torch.save(checkpoint['{keys[0]}'], path) writes it alone)"
            if len(keys) == 1 else "")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line: the weights-only unpickler's own reason (a pickled model
    class, a bad opcode), not torch's advice to unpickle code, which hubmerge never does."""
    text = str(exc)
    reason = text.split("WeightsUnpickler error:", 1)[1].strip() if "WeightsUnpickler error:" in text else text
    return " ".join([type(exc).__name__, *[line.split(". ", 1)[0] for line in reason.splitlines()[:1]]])


def _misfit(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into ``model`` exactly (missing, unexpected, other shapes), or ''."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes:", shapes)) if keys]
    return "; ".join(parts)
