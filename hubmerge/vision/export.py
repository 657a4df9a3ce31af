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
from typing import Literal

from ..errors import HeadMismatchError, RecipeError, UnsupportedArchitectureError, WeightsError
from .families import TORCHVISION_ARCHITECTURES, TORCHVISION_FAMILY

__all__ = ["TORCHVISION_ARCHITECTURES", "export_torchvision_resnet"]


def export_torchvision_resnet(
    architecture: str,
    out_dir: str | Path,
    *,
    weights: Literal["DEFAULT"] | None = None,
    num_classes: int | None = None,
    id2label: Mapping[int, str] | None = None,
) -> Path:
    """Create a torchvision ResNet model directory hubmerge can merge and ``load_merged`` can load.

    Args:
        architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.
        out_dir: the directory to write (created; files in it are replaced).
        weights: ``"DEFAULT"`` for torchvision's ImageNet weights (downloaded by torchvision, so it
            needs internet), or None for a random initialisation.
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
        RecipeError: ``weights`` is neither ``"DEFAULT"`` nor None.
        WeightsError: the ImageNet weights could not be downloaded (offline: use ``weights=None``).

    Example:
        >>> export_torchvision_resnet("resnet18", "models/r18-digits", num_classes=10)
    """
    import torch
    import torchvision
    from safetensors.torch import save_file

    if architecture not in TORCHVISION_ARCHITECTURES:
        raise UnsupportedArchitectureError(f"torchvision '{architecture}'", TORCHVISION_ARCHITECTURES)
    if weights not in ("DEFAULT", None):
        raise RecipeError(f"weights must be 'DEFAULT' (ImageNet) or None, got {weights!r}", field="weights")
    if num_classes is None and id2label is not None:
        num_classes = len(id2label)
    builder = getattr(torchvision.models, architecture)
    try:
        model = builder(weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise WeightsError(
            f"could not download torchvision's ImageNet weights for {architecture} ({exc}). "
            "Connect to the internet, or pass weights=None for a randomly initialised model."
        ) from None
    if num_classes is not None and num_classes != model.fc.out_features:
        model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    classes = model.fc.out_features
    labels = {int(k): str(v) for k, v in (id2label or {i: f"LABEL_{i}" for i in range(classes)}).items()}
    if sorted(labels) != list(range(classes)):
        raise HeadMismatchError(
            architecture, f"id2label must have one label per class 0..{classes - 1}, got {len(labels)}"
        )
    out = Path(out_dir)
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
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
