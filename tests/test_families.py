"""Model families as data rows: detection from config.json or tensor names (hubmerge.vision.families)."""

from __future__ import annotations

import json

import pytest
import torch

from hubmerge.errors import UnsupportedArchitectureError
from hubmerge.vision.families import (
    FAMILIES,
    TORCHVISION_FAMILY,
    detect_family,
    family_by_name,
    supported_families,
    torchvision_architecture,
)
from hubmerge.weights.index import open_weights
from hubmerge.weights.sources import LocalSource

from ._models import save_model


def torchvision_names(arch: str) -> list[str]:
    import torchvision

    with torch.device("meta"):
        return list(getattr(torchvision.models, arch)(weights=None).state_dict())


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_torchvision_resnets_are_told_apart_by_tensor_names(arch):
    names = torchvision_names(arch)
    assert torchvision_architecture(names) == arch
    family = detect_family(None, names)
    assert family.name == TORCHVISION_FAMILY and family.library == "torchvision"
    assert (family.head_weight, family.head_bias) == ("fc.weight", "fc.bias")
    assert family.in_backbone("layer4.1.conv1.weight") and not family.in_backbone("fc.weight")


def test_other_state_dicts_are_not_torchvision_resnets():
    names = torchvision_names("resnet18")
    assert torchvision_architecture([n for n in names if not n.startswith("layer3.1.")]) is None  # 2,2,1,2 blocks
    assert torchvision_architecture([n for n in names if not n.startswith("layer3.0.")]) is None  # a gap
    renumbered = [n.replace("layer3.1.", "layer3.2.") for n in names]  # blocks 0 and 2: two, but with a gap
    assert torchvision_architecture(renumbered) is None
    assert torchvision_architecture([n for n in names if n != "fc.weight"]) is None
    with pytest.raises(UnsupportedArchitectureError, match="unrecognised tensor names"):
        detect_family(None, ["encoder.weight", "head.weight"], where="m")


def test_transformers_families_from_config():
    convnext = detect_family({"model_type": "convnext"}, [])
    assert convnext.backbone == ("convnext",) and convnext.head_weight == "classifier.weight"
    resnet = detect_family({"model_type": "resnet", "architectures": ["ResNetForImageClassification"]}, [])
    assert resnet.head_weight == "classifier.1.weight" and resnet.backbone == ("resnet",)
    assert detect_family({"architectures": ["ConvNextForImageClassification"]}, []) is convnext
    assert detect_family({"hubmerge_family": TORCHVISION_FAMILY}, []).library == "torchvision"
    assert not convnext.in_backbone("convnext_extra.weight")  # a prefix is a whole name part


def test_a_config_naming_an_unknown_family_is_not_guessed_from_its_classes_or_tensors():
    """A model_type or architectures of no family (a ViT) is refused, whatever else the config or tensors say."""
    with pytest.raises(UnsupportedArchitectureError, match="model_type 'vit'"):
        detect_family({"model_type": "vit", "architectures": ["ConvNextForImageClassification"]}, [], where="m")
    with pytest.raises(UnsupportedArchitectureError, match="ViTForImageClassification"):
        detect_family({"architectures": ["ViTForImageClassification"]}, torchvision_names("resnet18"), where="m")


@pytest.mark.parametrize("kind", ["convnext", "resnet"])
def test_detection_of_saved_models_from_their_files(tmp_path, kind):
    path = save_model(kind, tmp_path / kind, seed=0, num_labels=3)
    config = json.loads((path / "config.json").read_text())
    family = detect_family(config, open_weights(LocalSource(path)).tensors, where=str(path))
    assert family.name == kind
    assert family.head_weight in open_weights(LocalSource(path)).tensors


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as info:
        detect_family({"model_type": "vit"}, ["vit.embeddings.cls_token"], where="org/vit")
    message = str(info.value)
    assert "org/vit" in message and "model_type 'vit'" in message
    for line in supported_families():
        assert line in message
    assert set(info.value.supported) == set(supported_families()) and len(supported_families()) == len(FAMILIES)


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_a_model_saved_under_a_training_wrappers_prefix_is_told_so(prefix):
    """DataParallel's 'module.', Lightning's 'model.': the error said only that no tensor was under the backbone
    (or that the names were unrecognised), and the planner took such inputs for models of no family."""
    convnext = ["convnext.embeddings.patch_embeddings.weight", "classifier.weight"]
    with pytest.raises(UnsupportedArchitectureError, match=f"every name starts with '{prefix}', a training") as info:
        detect_family({"model_type": "convnext"}, [prefix + n for n in convnext], where="m")
    assert info.value.wrapper == prefix
    with pytest.raises(UnsupportedArchitectureError, match="unrecognised tensor names; every name") as info:
        detect_family(None, [prefix + n for n in torchvision_names("resnet18")], where="m")
    assert info.value.wrapper == prefix
    for config, names in [({"model_type": "convnext"}, ["embeddings.patch_embeddings.weight"]),  # a ConvNextModel
                          ({"model_type": "convnext"}, [prefix + "embeddings.weight", prefix + "encoder.weight"]),
                          (None, [prefix + "encoder.weight", prefix + "head.weight"])]:
        with pytest.raises(UnsupportedArchitectureError) as info:
            detect_family(config, names, where="m")
        assert info.value.wrapper is None and "wrapper" not in str(info.value)


def test_a_config_whose_tensors_or_class_do_not_fit_is_refused():
    with pytest.raises(UnsupportedArchitectureError, match="no tensor is under convnext"):
        detect_family({"model_type": "convnext"}, ["embeddings.patch_embeddings.weight"], where="m")
    with pytest.raises(UnsupportedArchitectureError, match="ConvNextModel"):
        detect_family({"model_type": "convnext", "architectures": ["ConvNextModel"]}, [], where="m")
    with pytest.raises(UnsupportedArchitectureError, match="convnext"):
        family_by_name("vit")
