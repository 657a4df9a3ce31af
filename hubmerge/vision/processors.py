"""Image processors by stage: what turns PIL images into the batch a model expects.

* transformers families (ConvNeXt, ResNet) carry their image processor: the model's
  ``preprocessor_config.json`` (in a merged output, the base model's, copied by the merge), loaded
  with ``AutoImageProcessor`` and used as is at every stage (it resizes and normalises; it does not
  augment, so train = val = test).
* torchvision ResNets use the ImageNet recipe: train = RandomResizedCrop(224) + RandomHorizontalFlip
  + ToTensor + Normalize; val/test = Resize(256) + CenterCrop(224) + ToTensor + Normalize, with
  ImageNet's mean and std.

A merged output says which one it carries in ``hubmerge_heads.json`` (``"processor"``, written from
``processor_info``); ``describe_processor`` puts it in words for plans and cards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..recipe import ModelRef
from .families import TORCHVISION_FAMILY, Family
from .loading import offline_cache_gap, read_json_object, resolve_model_dir

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Stage",
    "describe_processor",
    "load_processor",
    "processor_info",
    "torchvision_transforms",
]

Stage = Literal["train", "val", "test"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STAGES = ("train", "val", "test")
_TORCHVISION_STAGES = {
    "train": "RandomResizedCrop(224)+RandomHorizontalFlip+ToTensor+Normalize(ImageNet mean/std)",
    "val": "Resize(256)+CenterCrop(224)+ToTensor+Normalize(ImageNet mean/std)",
    "test": "Resize(256)+CenterCrop(224)+ToTensor+Normalize(ImageNet mean/std)",
}
#: the image processor's config a transformers model is saved with (a merged output has its base's)
PROCESSOR_FILE = "preprocessor_config.json"
_PROCESSOR_FILES = ("config.json", PROCESSOR_FILE, "hubmerge_heads.json")


def torchvision_transforms(stage: Stage) -> Callable[[Image], torch.Tensor]:
    """The torchvision ImageNet transforms for one RGB image at ``stage``.

    Raises:
        ValueError: ``stage`` is not train, val or test.
    """
    from torchvision import transforms

    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {', '.join(_STAGES)}, got {stage!r}")
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if stage == "train":
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    process: Callable[[Image], torch.Tensor] = transforms.Compose([*steps, transforms.ToTensor(), normalize])
    return process


def processor_info(family: Family | None, preprocessor_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a model of ``family`` is preprocessed with, as plain data (``hubmerge_heads.json``'s ``processor``).

    Args:
        family: the model's family (None: decided by whether a ``preprocessor_config.json`` exists).
        preprocessor_config: the model's ``preprocessor_config.json``, if it has one.

    Returns:
        ``{"kind": "torchvision-imagenet", "stages": {...}}``, ``{"kind": "image_processor", "type",
        "file": "preprocessor_config.json", "stages": "same for train/val/test"}`` or ``{"kind": "none"}``.
    """
    if family is not None and family.processor == "torchvision-imagenet":
        return {"kind": "torchvision-imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "stages": dict(_TORCHVISION_STAGES)}
    if preprocessor_config is None:
        return {"kind": "none"}
    return {
        "kind": "image_processor",
        "type": str(preprocessor_config.get("image_processor_type", "image processor")),
        "file": "preprocessor_config.json",
        "stages": "same for train/val/test (no augmentation)",
    }


def _info(directory: Path, hub: ModelRef | None, token: str | None) -> dict[str, Any]:
    index = read_json_object(directory / "hubmerge_heads.json")
    if index is not None and isinstance(index.get("processor"), dict):
        return dict(index["processor"])
    config = read_json_object(directory / "config.json") or {}
    family = None
    # as in detect_family: a config naming no family ({"num_classes": 10}, by hand) leaves it to the tensors
    named = any(config.get(key) for key in ("hubmerge_family", "model_type", "architectures"))
    if config.get("hubmerge_family") == TORCHVISION_FAMILY or (
        not named and _torchvision_weights(directory, hub, token)
    ):
        from .families import family_by_name

        family = family_by_name(TORCHVISION_FAMILY)
    return processor_info(family, read_json_object(directory / PROCESSOR_FILE))


def _torchvision_weights(directory: Path, hub: ModelRef | None, token: str | None) -> bool:
    """True for a folder whose weights are a torchvision ResNet's state dict: such a model needs no config.json,
    nor one naming its family (the planner and the loader know it by its tensor names), so it has no
    preprocessor_config.json either.

    ``hub``: the repo ``directory`` is a snapshot of, holding only the processor's files; its weights' headers
    are read from the Hub, as the planner reads them (a Hub ResNet without config.json was told to save an
    image processor)."""
    from huggingface_hub import constants

    from ..engine.planning import open_source
    from ..errors import ModelFilesNotFoundError
    from ..weights.index import open_weights
    from ..weights.sources import LocalSource, WeightSource
    from .families import torchvision_architecture

    source: WeightSource
    if any(directory.glob("*.safetensors")):
        source = LocalSource(directory)
    elif hub is not None and not constants.is_offline_mode():
        source = open_source(hub, token=token)
    else:
        return False  # nothing to tell it by
    try:
        return torchvision_architecture(open_weights(source).tensors) is not None
    except ModelFilesNotFoundError:  # a repo of a processor alone
        return False
    finally:
        source.close()


def _processor_files(
    path_or_repo: str | os.PathLike[str], revision: str | None, token: str | None
) -> tuple[Path, dict[str, Any]]:
    """The folder of a model's processor files (only those are downloaded from the Hub) and what its processor
    is (``_info``)."""
    directory = resolve_model_dir(path_or_repo, revision=revision, token=token, files=_PROCESSOR_FILES)
    return directory, _info(directory, _hub_ref(path_or_repo, revision), token)


def _hub_ref(path_or_repo: str | os.PathLike[str], revision: str | None) -> ModelRef | None:
    """The Hub repo (at ``revision``) that ``path_or_repo`` names, or None for a folder."""
    ref = ModelRef.parse(path_or_repo)
    return None if ref.repo_id is None else replace(ref, revision=revision or ref.revision)


def load_processor(
    path_or_repo: str | os.PathLike[str],
    *,
    stage: Stage = "test",
    revision: str | None = None,
    token: str | None = None,
) -> Callable[[Sequence[Image]], torch.Tensor]:
    """A batched processor for a model: a list of PIL images (any mode) -> a float tensor [B, 3, H, W].

    Args:
        path_or_repo: a model or merged output (directory or ``org/name[@revision]``); only its
            config and processor files are downloaded.
        stage: ``train`` (augmenting, for torchvision), ``val`` or ``test``.
        revision, token: for Hub repos.

    Returns:
        A function of a list of images; each image is converted to RGB first.

    Raises:
        ModelFilesNotFoundError: a transformers model without ``preprocessor_config.json``.
        ValueError: an unknown ``stage``. HubError / RepoNotFoundError: for Hub repos.

    Example:
        >>> pixels = load_processor("out/merged", stage="test")([image_a, image_b])
    """
    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {', '.join(_STAGES)}, got {stage!r}")
    directory, info = _processor_files(path_or_repo, revision, token)
    if info["kind"] == "torchvision-imagenet":
        import torch

        one = torchvision_transforms(stage)
        return lambda images: torch.stack([one(image.convert("RGB")) for image in images])
    if info["kind"] == "none":
        from ..errors import ModelFilesNotFoundError

        if gap := offline_cache_gap(f"the preprocessor_config.json of '{path_or_repo}'", directory):
            raise gap
        raise ModelFilesNotFoundError(
            f"'{path_or_repo}' has no preprocessor_config.json: save the model's image processor with it "
            "(processor.save_pretrained)", path=str(directory))
    from transformers import AutoImageProcessor

    for name in (PROCESSOR_FILE, "config.json"):  # what transformers reads: a broken one in words
        read_json_object(directory / name)
    processor = AutoImageProcessor.from_pretrained(str(directory))  # the same for every stage: no augmentation

    def process(images: Sequence[Image]) -> torch.Tensor:
        pixels: torch.Tensor = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")[
            "pixel_values"]
        return pixels

    return process


def describe_processor(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None, token: str | None = None
) -> str:
    """Which processor a model or merged output uses, in words (plans and cards print it).

    Example:
        >>> describe_processor("out/merged")
        'ConvNextImageProcessor from preprocessor_config.json (the same for train/val/test)'
    """
    _, info = _processor_files(path_or_repo, revision, token)
    if info["kind"] == "torchvision-imagenet":
        return ("torchvision ImageNet transforms: train RandomResizedCrop(224)+RandomHorizontalFlip, "
                "val/test Resize(256)+CenterCrop(224); ToTensor+Normalize(ImageNet mean/std)")
    if info["kind"] == "none":
        return "none (no preprocessor_config.json)"
    return f"{info['type']} from preprocessor_config.json (the same for train/val/test)"
