"""torchvision ResNets as hubmerge model directories (hubmerge.vision.export)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hubmerge.errors import HeadMismatchError, RecipeError, UnsupportedArchitectureError, WeightsError
from hubmerge.vision.export import export_torchvision_resnet
from hubmerge.vision.families import detect_family, torchvision_architecture


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_export_writes_torchvision_names_and_a_small_config(tmp_path, arch):
    out = export_torchvision_resnet(arch, tmp_path / arch, num_classes=5)
    tensors = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config == {"hubmerge_family": "torchvision-resnet", "architecture": arch, "num_classes": 5,
                      "id2label": {str(i): f"LABEL_{i}" for i in range(5)},
                      "label2id": {f"LABEL_{i}": i for i in range(5)}, "weights": None}
    assert tensors["fc.weight"].shape[0] == 5 and tensors["bn1.num_batches_tracked"].dtype == torch.int64
    assert torchvision_architecture(tensors) == arch and detect_family(config, tensors).name == "torchvision-resnet"


def test_labels_set_the_head_size_and_must_fit(tmp_path):
    out = export_torchvision_resnet("resnet18", tmp_path / "a", id2label={0: "cat", 1: "dog"})
    assert json.loads((out / "config.json").read_text())["num_classes"] == 2
    with pytest.raises(HeadMismatchError, match="one label per class"):
        export_torchvision_resnet("resnet18", tmp_path / "b", num_classes=3, id2label={0: "cat", 1: "dog"})


def test_bad_arguments(tmp_path):
    with pytest.raises(UnsupportedArchitectureError, match="resnet152"):
        export_torchvision_resnet("vgg16", tmp_path / "v")
    with pytest.raises(RecipeError, match="DEFAULT"):
        export_torchvision_resnet("resnet18", tmp_path / "w", weights="IMAGENET1K_V2")  # type: ignore[arg-type]


def test_imagenet_weights_need_the_internet(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: torchvision must download

    def unreachable(url, *args, **kwargs):
        raise OSError(f"<urlopen error [Errno 101] Network is unreachable> ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsError, match="weights=None"):
        export_torchvision_resnet("resnet18", tmp_path / "m", weights="DEFAULT")
    assert not (tmp_path / "m").exists()
