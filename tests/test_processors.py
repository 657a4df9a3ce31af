"""Image processors by stage, and what an output says it carries (hubmerge.vision.processors)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from hubmerge import engine
from hubmerge.errors import ModelFilesNotFoundError, WeightsError
from hubmerge.fixtures import build_fixtures
from hubmerge.recipe import Recipe
from hubmerge.vision.export import export_torchvision_resnet
from hubmerge.vision.families import family_by_name
from hubmerge.vision.processors import (
    IMAGENET_MEAN,
    describe_processor,
    load_processor,
    processor_info,
    torchvision_transforms,
)


def images():
    return [Image.new("L", (40, 30), 128), Image.new("RGBA", (300, 280)), Image.new("RGB", (8, 8))]


def test_transformers_models_use_their_image_processor_at_every_stage(tmp_path):
    from transformers import AutoImageProcessor

    fixtures = build_fixtures(family="convnext")
    out = tmp_path / "out"
    engine.merge(Recipe.from_dict({"method": "simple_average", "base_model": str(fixtures.base),
                                   "models": [{"model": str(p), "task": t} for t, p in fixtures.models.items()]}), out)
    expected = AutoImageProcessor.from_pretrained(fixtures.base)([i.convert("RGB") for i in images()],
                                                                 return_tensors="pt")["pixel_values"]
    for stage in ("train", "val", "test"):
        torch.testing.assert_close(load_processor(out, stage=stage)(images()), expected)
    info = json.loads((out / "hubmerge_heads.json").read_text())["processor"]
    assert info["kind"] == "image_processor" and info["type"] == "ConvNextImageProcessor"
    assert "ConvNextImageProcessor" in describe_processor(out) and "train/val/test" in describe_processor(out)
    # a broken file transformers reads was an "unexpected error" (JSONDecodeError, or an OSError)
    for name in ("config.json", "preprocessor_config.json"):
        good = (out / name).read_text()
        (out / name).write_text("{broken")
        with pytest.raises(WeightsError, match=f"'{out / name}' is not valid JSON"):
            load_processor(out)
        (out / name).write_text(good)


def test_torchvision_stages(tmp_path):
    model = export_torchvision_resnet("resnet18", tmp_path / "tv", num_classes=2)
    batch = load_processor(model, stage="test")(images())
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    assert load_processor(model, stage="train")(images()).shape == (3, 3, 224, 224)
    names = [type(t).__name__ for t in torchvision_transforms("train").transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    val = torchvision_transforms("val").transforms
    assert [type(t).__name__ for t in val] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert val[0].size == 256 and val[1].size == (224, 224) and tuple(val[3].mean) == IMAGENET_MEAN
    grey = Image.new("L", (256, 256), 0)  # black: each channel is -mean/std after normalising
    pixel = load_processor(model)([grey])[0, :, 100, 100]
    torch.testing.assert_close(pixel, -torch.tensor(IMAGENET_MEAN) / torch.tensor([0.229, 0.224, 0.225]))
    assert "Resize(256)" in describe_processor(model) and "RandomResizedCrop(224)" in describe_processor(model)


def test_a_torchvision_output_says_which_transforms_it_uses(tmp_path):
    paths = [export_torchvision_resnet("resnet18", tmp_path / f"m{i}", num_classes=2) for i in range(2)]
    engine.merge(Recipe.from_dict({"method": "simple_average",
                                   "models": [{"model": str(p), "task": f"t{i}"} for i, p in enumerate(paths)]}),
                 tmp_path / "out")
    info = json.loads((tmp_path / "out" / "hubmerge_heads.json").read_text())["processor"]
    assert info["kind"] == "torchvision-imagenet" and info["stages"]["train"].startswith("RandomResizedCrop(224)")
    assert load_processor(tmp_path / "out", stage="val")(images()).shape == (3, 3, 224, 224)


def test_a_torchvision_state_dict_without_a_config_uses_the_imagenet_transforms(tmp_path):
    """The planner and the loader take a folder holding only a torchvision ResNet's model.safetensors, but its
    processor was looked for in a preprocessor_config.json: evaluate (and --compare-inputs of a merge of such
    folders) failed, telling the user to save a transformers image processor."""
    from safetensors.torch import save_file

    model = export_torchvision_resnet("resnet18", tmp_path / "tv", num_classes=2)
    (model / "config.json").unlink()
    assert load_processor(model)(images()).shape == (3, 3, 224, 224)
    assert describe_processor(model).startswith("torchvision ImageNet transforms")
    (tmp_path / "other").mkdir()  # weights of no torchvision ResNet, no config: nothing says what they need
    save_file({"encoder.weight": torch.zeros(2)}, tmp_path / "other" / "model.safetensors")
    with pytest.raises(ModelFilesNotFoundError, match="no preprocessor_config.json"):
        load_processor(tmp_path / "other")


def test_a_torchvision_config_naming_no_family_uses_the_imagenet_transforms(tmp_path):
    """A hand-written config.json of a torchvision state dict that names no family ({"num_classes": 3}): the
    planner and the loader know the model by its tensors, as without a config, but its processor was looked
    for in a preprocessor_config.json, so evaluate failed on a model load_classifier took."""
    model = export_torchvision_resnet("resnet18", tmp_path / "tv", num_classes=3)
    (model / "config.json").write_text(json.dumps({"num_classes": 3, "id2label": {"0": "a", "1": "b", "2": "c"}}))
    assert load_processor(model)(images()).shape == (3, 3, 224, 224)
    assert describe_processor(model).startswith("torchvision ImageNet transforms")
    (model / "config.json").write_text(json.dumps({"model_type": "resnet"}))  # a family named: it rules
    with pytest.raises(ModelFilesNotFoundError, match="no preprocessor_config.json"):
        load_processor(model)


def test_a_hub_torchvision_state_dict_without_a_config_uses_the_imagenet_transforms(tmp_path, local_hub):
    """Only the processor's files are downloaded for a Hub model's processor, so a Hub repo holding only a
    torchvision ResNet's model.safetensors (which the planner and the loader take) had nothing to tell it by:
    evaluate said to save an image processor. Its weights' headers say it, as they say it to the planner."""
    import uuid

    from huggingface_hub import HfApi

    model = export_torchvision_resnet("resnet18", tmp_path / "tv", num_classes=2)
    (model / "config.json").unlink()
    repo_id = f"alice/tv-no-config-{uuid.uuid4().hex[:6]}"  # a repo of its own: an empty cache
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id)
    sha = api.upload_folder(folder_path=model, repo_id=repo_id).oid
    assert describe_processor(f"{repo_id}@{sha}").startswith("torchvision ImageNet transforms")
    assert load_processor(repo_id)(images()).shape == (3, 3, 224, 224)
    from transformers import ConvNextImageProcessor

    processor_only = f"alice/processor-{uuid.uuid4().hex[:6]}"  # no config.json, no weights: its processor
    api.create_repo(processor_only)
    ConvNextImageProcessor(size={"shortest_edge": 32}).push_to_hub(processor_only, token=local_hub.alice_token)
    assert describe_processor(processor_only).startswith("ConvNextImageProcessor from preprocessor_config.json")


def test_processor_info_and_errors(tmp_path):
    assert processor_info(family_by_name("torchvision-resnet"), None)["stages"]["test"].startswith("Resize(256)")
    assert processor_info(family_by_name("convnext"), None) == {"kind": "none"}
    (tmp_path / "config.json").write_text('{"model_type": "convnext"}')
    with pytest.raises(ModelFilesNotFoundError, match="preprocessor_config.json"):
        load_processor(tmp_path)
    with pytest.raises(ValueError, match="stage"):
        load_processor(tmp_path, stage="eval")  # type: ignore[arg-type]
