"""Image-classification model families as data: how to recognise one, what is backbone and what is head.

A family is one row of ``FAMILIES``, not a class. Read a row as a table of tensor roles:

============  =====================================================  ==========================
role          tensors                                                what the merge does
============  =====================================================  ==========================
backbone      float tensors under ``backbone`` (the ``target_modules``)  merged by the method
buffer        integer tensors under ``backbone`` (``num_batches_tracked``)  copied, never averaged
statistics    BatchNorm ``running_mean`` / ``running_var`` under ``backbone``  the fine-tunes' mean (*)
head          ``head_weight`` / ``head_bias`` (a Linear: [classes, in_features])  kept per task
other         anything else outside ``backbone``                      kept with its task's head
============  =====================================================  ==========================

(*) with the methods that take a base model (task vectors: task_arithmetic, ties, dare, breadcrumbs,
model_stock). Statistics describe activations, not learnt weights, and a scaled sum of their differences
from the base can make a variance negative (the model's outputs are then NaN). The averages and slerp
stay between their inputs and merge them like any other tensor.

The remaining columns say how a family is recognised (``config.json`` ``model_type`` /
``architectures``; torchvision state dicts, which have no config of their own, by their tensor
names), how a model of it is built (``library``) and which image processor it uses
(``processor``). The planner asks for the backbone and head; the loader for the library.
This module imports nothing heavy: the planner imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UnsupportedArchitectureError

__all__ = [
    "FAMILIES",
    "TORCHVISION_ARCHITECTURES",
    "TORCHVISION_FAMILY",
    "Family",
    "detect_family",
    "family_by_name",
    "is_running_statistic",
    "model_layout",
    "supported_families",
    "torchvision_architecture",
]

TORCHVISION_FAMILY = "torchvision-resnet"
RUNNING_STATISTICS = ("running_mean", "running_var")
TORCHVISION_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class Family:
    """One family of image classifiers (one row of ``FAMILIES``).

    Attributes:
        name: the family's name (shown in plans, ``hubmerge_heads.json`` and cards).
        description: what it is, in words (listed when an architecture is not supported).
        model_types: ``config.json`` ``model_type`` (or ``hubmerge_family``) values of this family.
        architectures: ``config.json`` ``architectures`` entries that are this family's classifier.
        backbone: name prefixes of the shared backbone: the merge's ``target_modules``.
        head_weight, head_bias: the classification Linear's tensors, kept per task; the weight's
            shape is ``[classes, in_features]``.
        library: ``transformers`` (``AutoModelForImageClassification``) or ``torchvision``
            (``torchvision.models.<architecture>``): how a model is built and loaded.
        processor: ``image_processor`` (the model's ``preprocessor_config.json``) or
            ``torchvision-imagenet`` (the ImageNet transforms by stage, see ``processors``).
    """

    name: str
    description: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    backbone: tuple[str, ...]
    head_weight: str
    head_bias: str
    library: Literal["transformers", "torchvision"]
    processor: Literal["image_processor", "torchvision-imagenet"]

    def is_head(self, tensor: str) -> bool:
        """True for the classification layer's weight and bias."""
        return tensor in (self.head_weight, self.head_bias)

    def in_backbone(self, tensor: str) -> bool:
        """True for a tensor under one of the backbone prefixes."""
        return any(tensor == p or tensor.startswith(p + ".") for p in self.backbone)


def is_running_statistic(tensor: str) -> bool:
    """True for a normalisation layer's running mean or variance (BatchNorm, in every family that has one)."""
    return tensor.rsplit(".", 1)[-1] in RUNNING_STATISTICS


FAMILIES: tuple[Family, ...] = (
    Family(
        name="convnext",
        description="convnext (transformers ConvNextForImageClassification)",
        model_types=("convnext",),
        architectures=("ConvNextForImageClassification",),
        backbone=("convnext",),
        head_weight="classifier.weight",
        head_bias="classifier.bias",
        library="transformers",
        processor="image_processor",
    ),
    Family(
        name="resnet",
        description="resnet (transformers ResNetForImageClassification)",
        model_types=("resnet",),
        architectures=("ResNetForImageClassification",),
        backbone=("resnet",),
        head_weight="classifier.1.weight",
        head_bias="classifier.1.bias",
        library="transformers",
        processor="image_processor",
    ),
    Family(
        name=TORCHVISION_FAMILY,
        description="torchvision-resnet (torchvision resnet18/34/50/101/152 state dicts)",
        model_types=(TORCHVISION_FAMILY,),
        architectures=(),
        backbone=("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
        head_weight="fc.weight",
        head_bias="fc.bias",
        library="torchvision",
        processor="torchvision-imagenet",
    ),
)

# torchvision ResNets: blocks per stage, and whether the block is a Bottleneck (has conv3).
_TORCHVISION_BLOCKS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
_STAGE_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")


def supported_families() -> list[str]:
    """One line per supported family (what ``UnsupportedArchitectureError`` lists)."""
    return [family.description for family in FAMILIES]


def family_by_name(name: str) -> Family:
    """The row called ``name``.

    Raises:
        UnsupportedArchitectureError: no family of that name (the supported ones are listed).
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UnsupportedArchitectureError(f"family '{name}'", supported_families())


def torchvision_architecture(tensor_names: Iterable[str]) -> str | None:
    """``resnet18`` .. ``resnet152`` from a torchvision state dict's tensor names, or None.

    The blocks per stage (``layer{1-4}.{i}.``) and the block type (a Bottleneck has ``conv3``)
    identify the architecture; names of any other layout give None.

    Example:
        >>> import torchvision
        >>> torchvision_architecture(torchvision.models.resnet50().state_dict())
        'resnet50'
    """
    names = set(tensor_names)
    if "conv1.weight" not in names or "fc.weight" not in names:
        return None
    blocks: dict[int, set[int]] = {stage: set() for stage in range(1, 5)}
    for name in names:
        match = _STAGE_BLOCK.match(name)
        if match:
            blocks[int(match.group(1))].add(int(match.group(2)))
    counts = tuple(len(blocks[stage]) for stage in range(1, 5))
    if any(sorted(blocks[stage]) != list(range(counts[stage - 1])) for stage in range(1, 5)):
        return None  # gaps in the block numbering: not a torchvision ResNet
    bottleneck = "layer1.0.conv3.weight" in names
    return _TORCHVISION_BLOCKS.get((counts, bottleneck))


# config.json keys that fix a transformers model's layout: inputs that differ in one are not one architecture
_LAYOUT_KEYS = ("layer_type", "depths", "hidden_sizes", "embedding_size")


def model_layout(family: Family, config: Mapping[str, Any] | None, tensor_names: Iterable[str]) -> dict[str, str]:
    """What says which model of ``family`` this is: torchvision's ``{"architecture": "resnet18"}`` (from the
    tensor names), or a transformers config's layout keys (``layer_type``, ``depths``, ...) it has, as text.
    The planner names those that differ when the inputs' tensors do not line up.

    Example:
        >>> model_layout(family_by_name("resnet"), {"layer_type": "basic", "depths": [2, 2, 2, 2]}, [])
        {'layer_type': 'basic', 'depths': '[2, 2, 2, 2]'}
    """
    if family.library == "torchvision":
        architecture = torchvision_architecture(tensor_names)
        return {"architecture": architecture} if architecture else {}
    return {key: str(config[key]) for key in _LAYOUT_KEYS if config is not None and key in config}


def _wrapper_prefix(names: list[str], fits: Callable[[list[str]], bool]) -> str | None:
    """The first part all ``names`` share, when without it they fit a family (``fits``): the prefix a training
    wrapper adds (DataParallel's ``module.``), which transformers and torchvision do not load either."""
    first = {name.split(".", 1)[0] for name in names}
    prefix = f"{first.pop()}." if len(first) == 1 and all("." in name for name in names) else None
    return prefix if prefix is not None and fits([name.removeprefix(prefix) for name in names]) else None


def _unwrap_hint(prefix: str | None) -> str:
    if prefix is None:
        return ""
    return f"; every name starts with '{prefix}', a training wrapper's prefix: save the unwrapped model"


def detect_family(
    config: Mapping[str, Any] | None, tensor_names: Iterable[str], *, where: str = "the model"
) -> Family:
    """The family of a model from its ``config.json`` (if any) and its tensor names.

    A config's ``hubmerge_family`` or ``model_type`` names the family; its ``architectures``, when
    given, must include the family's classifier class (a ``ConvNextModel`` has no head to keep).
    Without a config, the tensor names of a torchvision ResNet state dict identify it. When tensor
    names are given, the backbone prefix must occur among them.

    Args:
        config: the parsed ``config.json``, or None when the model has none.
        tensor_names: the model's tensor names (from its headers); may be empty to decide from the config.
        where: the model, for the message.

    Returns:
        The family's row.

    Raises:
        UnsupportedArchitectureError: none of the known families (the message lists them), or a
            config that names a family whose tensors or classifier class are not there; its ``wrapper``
            is the prefix (``module.``) a training wrapper put before names that would be a family's.

    Example:
        >>> detect_family({"model_type": "convnext"}, []).backbone
        ('convnext',)
    """
    names = list(tensor_names)
    config = config or {}
    model_type = config.get("hubmerge_family") or config.get("model_type")
    architectures = [str(a) for a in config.get("architectures") or []]
    family = next((f for f in FAMILIES if model_type in f.model_types), None)
    if family is None and model_type is None:
        family = next((f for f in FAMILIES if set(f.architectures) & set(architectures)), None)
        if family is None and not architectures and torchvision_architecture(names) is not None:
            family = family_by_name(TORCHVISION_FAMILY)
    if family is None:
        wrapper = None if model_type or architectures else _wrapper_prefix(
            names, lambda bare: torchvision_architecture(bare) is not None)
        named = f"model_type '{model_type}'" if model_type else (
            f"architectures {architectures}" if architectures else
            f"no config.json and unrecognised tensor names{_unwrap_hint(wrapper)}")
        raise UnsupportedArchitectureError(f"{where} ({named})", supported_families(), wrapper=wrapper)
    if architectures and family.architectures and not set(family.architectures) & set(architectures):
        raise UnsupportedArchitectureError(
            f"{where} (a {family.name} {'/'.join(architectures)}, not an image classifier with a head: "
            f"expected {'/'.join(family.architectures)})",
            supported_families(),
        )
    if names and not any(family.in_backbone(n) for n in names):
        wrapper = _wrapper_prefix(names, lambda bare: any(map(family.in_backbone, bare)))
        raise UnsupportedArchitectureError(
            f"{where} (its config says {family.name}, but no tensor is under {'/'.join(family.backbone)}"
            f"{_unwrap_hint(wrapper)})",
            supported_families(), wrapper=wrapper,
        )
    return family
