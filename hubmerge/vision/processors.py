"""Image processors by stage: what turns PIL images into the batch a model expects.

transformers families carry their image processor (``preprocessor_config.json``, the base model's
in a merged output), used as is at every stage (it does not augment). torchvision ResNets use the ImageNet recipe: train = RandomResizedCrop(224) +
RandomHorizontalFlip + ToTensor + Normalize; val/test = Resize(256) + CenterCrop(224) + ToTensor +
Normalize, with ImageNet's mean and std. ``describe_processor`` says which one a model uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from .families import TORCHVISION_FAMILY
from .loading import resolve_model_dir

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "describe_processor", "load_processor", "torchvision_transforms"]

Stage = Literal["train", "val", "test"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_transforms(stage: Stage) -> Callable[[Image], torch.Tensor]:
    """The torchvision ImageNet transforms for one image at ``stage``."""
    from torchvision import transforms

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if stage == "train":
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    return transforms.Compose([*steps, transforms.ToTensor(), normalize])


def _is_torchvision(directory: os.PathLike[str] | str) -> bool:
    from pathlib import Path

    config = Path(directory) / "config.json"
    return config.exists() and json.loads(config.read_text()).get("hubmerge_family") == TORCHVISION_FAMILY


def load_processor(
    path_or_repo: str | os.PathLike[str],
    *,
    stage: Stage = "test",
    revision: str | None = None,
    token: str | None = None,
) -> Callable[[Sequence[Image]], torch.Tensor]:
    """A batched processor: a list of PIL images (any mode) -> a float tensor [B, 3, H, W].

    Args:
        path_or_repo: a model or merged output (directory or ``org/name[@revision]``).
        stage: ``train`` (augmenting), ``val`` or ``test``.
    """
    directory = resolve_model_dir(path_or_repo, revision=revision, token=token)
    if _is_torchvision(directory):
        import torch

        one = torchvision_transforms(stage)
        return lambda images: torch.stack([one(image.convert("RGB")) for image in images])
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(directory))  # the same for every stage: no augmentation

    def process(images: Sequence[Image]) -> torch.Tensor:
        return processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]

    return process


def describe_processor(path_or_repo: str | os.PathLike[str], *, revision: str | None = None, token: str | None = None) -> str:
    """Which processor a model uses, in words (the plan and the card print it)."""
    directory = resolve_model_dir(path_or_repo, revision=revision, token=token)
    if _is_torchvision(directory):
        return ("torchvision ImageNet transforms: train RandomResizedCrop(224)+RandomHorizontalFlip, "
                "val/test Resize(256)+CenterCrop(224); ToTensor+Normalize(ImageNet mean/std)")
    from pathlib import Path

    config_path = Path(directory) / "preprocessor_config.json"
    if not config_path.exists():
        return "none (no preprocessor_config.json)"
    kind = json.loads(config_path.read_text()).get("image_processor_type", "image processor")
    return f"{kind} from preprocessor_config.json (the base model's)"
