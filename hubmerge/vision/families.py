"""Image-classification model families as data: how to recognise one, what is backbone and what is head.

A family is one row, not a class: the planner asks which tensors form the shared backbone (the
merge's ``target_modules``) and which form the task head; the loader asks how to build an empty
model of the family. Detection uses ``config.json`` when there is one and the tensor names when
there is not (torchvision state dicts). This module imports nothing heavy: the planner uses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedArchitectureError

__all__ = ["FAMILIES", "Family", "detect_family", "family_by_name", "torchvision_architecture"]

TORCHVISION_FAMILY = "torchvision-resnet"


@dataclass(frozen=True)
class Family:
    """One family of image classifiers.

    Attributes:
        name: the family's name (shown in plans and cards).
        model_types: ``config.json`` ``model_type`` values that mean this family.
        backbone: name prefixes of the shared backbone (what is merged).
        head_weight, head_bias: the classification layer's tensors (what each task keeps).
        library: ``transformers`` or ``torchvision`` (how models are built and loaded).
    """

    name: str
    model_types: tuple[str, ...]
    backbone: tuple[str, ...]
    head_weight: str
    head_bias: str
    library: str

    @property
    def head_prefix(self) -> str:
        return self.head_weight.rsplit(".", 1)[0] + "."

    def is_head(self, tensor: str) -> bool:
        return tensor in (self.head_weight, self.head_bias)


FAMILIES: tuple[Family, ...] = (
    Family("convnext", ("convnext",), ("convnext",), "classifier.weight", "classifier.bias", "transformers"),
    Family("resnet", ("resnet",), ("resnet",), "classifier.1.weight", "classifier.1.bias", "transformers"),
    Family(
        TORCHVISION_FAMILY,
        (TORCHVISION_FAMILY,),
        ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
        "fc.weight",
        "fc.bias",
        "torchvision",
    ),
)

# torchvision ResNets: blocks per stage, and whether the block is a Bottleneck (has conv3).
_TORCHVISION_ARCHS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


def family_by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UnsupportedArchitectureError(f"family '{name}'", [f.name for f in FAMILIES])


def torchvision_architecture(tensor_names: Iterable[str]) -> str | None:
    """``resnet18`` .. ``resnet152`` from a torchvision state dict's tensor names, or None."""
    names = set(tensor_names)
    if "conv1.weight" not in names or "fc.weight" not in names:
        return None
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for n in names if (m := re.match(rf"layer{stage}\.(\d+)\.", n))}
        blocks.append(len(indices))
    bottleneck = any(re.match(r"layer1\.0\.conv3\.", n) for n in names)
    return _TORCHVISION_ARCHS.get((tuple(blocks), bottleneck))


def detect_family(config: Mapping[str, Any] | None, tensor_names: Iterable[str], *, where: str = "the model") -> Family:
    """The family of a model from its ``config.json`` (if any) and its tensor names.

    Raises:
        UnsupportedArchitectureError: none of the known families; the message lists them.
    """
    names = list(tensor_names)
    model_type = (config or {}).get("hubmerge_family") or (config or {}).get("model_type")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    if model_type is None and torchvision_architecture(names) is not None:
        return family_by_name(TORCHVISION_FAMILY)
    what = f"{where} (model_type '{model_type}')" if model_type else where
    supported = [
        "convnext (transformers ConvNextForImageClassification)",
        "resnet (transformers ResNetForImageClassification)",
        "torchvision-resnet (resnet18/34/50/101/152 state dicts)",
    ]
    raise UnsupportedArchitectureError(what, supported)
