"""Model families, head decisions, loading merged outputs and processors (hubmerge.vision)."""

from __future__ import annotations

import json
import shutil
import uuid

import datasets
import pytest
import torch
from safetensors.torch import load_file, save_file

from hubmerge import engine
from hubmerge.card import collect_card, render_card
from hubmerge.errors import DatasetError, HeadMismatchError, UnknownTaskError, UnsupportedArchitectureError
from hubmerge.fixtures import accuracy, build_fixtures
from hubmerge.recipe import DatasetRef, Recipe
from hubmerge.vision.export import export_torchvision_resnet
from hubmerge.vision.families import detect_family, torchvision_architecture
from hubmerge.vision.heads import decide_head, read_dataset_labels
from hubmerge.vision.loading import load_classifier, load_merged, model_labels, model_tasks
from hubmerge.vision.processors import describe_processor, load_processor, torchvision_transforms

from ._fixture_helpers import TaskEvaluator, backbone_of, load_tensors, simple_average


@pytest.fixture(scope="module")
def fixtures():
    return build_fixtures(family="convnext")


def fixture_recipe(fixtures, method="simple_average", **extra) -> Recipe:
    return Recipe.from_dict({
        "method": method, "base_model": str(fixtures.base),
        "models": [{"model": str(p), "task": t, "dataset": str(fixtures.datasets[t])} for t, p in fixtures.models.items()],
        **extra,
    })


@pytest.fixture(scope="module")
def merged(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "out"
    engine.merge(fixture_recipe(fixtures), out)
    return out


# ----------------------------------------------------------------------------- families


def torchvision_names(arch: str) -> list[str]:
    import torchvision

    with torch.device("meta"):
        return list(getattr(torchvision.models, arch)(weights=None).state_dict())


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_torchvision_resnets_are_told_apart_by_tensor_names(arch):
    names = torchvision_names(arch)
    assert torchvision_architecture(names) == arch
    assert detect_family(None, names).name == "torchvision-resnet"


def test_transformers_families_from_config():
    assert detect_family({"model_type": "convnext"}, []).backbone == ("convnext",)
    resnet = detect_family({"model_type": "resnet"}, [])
    assert resnet.head_weight == "classifier.1.weight" and resnet.backbone == ("resnet",)


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as info:
        detect_family({"model_type": "vit"}, ["vit.embeddings.cls_token"], where="org/vit")
    message = str(info.value)
    assert "org/vit" in message and "vit" in message and "convnext" in message and "torchvision-resnet" in message


def test_plan_refuses_an_unknown_family_with_tasks_and_no_target_modules(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save_file({"encoder.w": torch.ones(2), "head.w": torch.ones(2)}, tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text('{"model_type": "mystery"}')
    recipe = Recipe.from_dict({"method": "simple_average",
                               "models": [{"model": str(tmp_path / n), "task": n} for n in ("a", "b")]})
    with pytest.raises(UnsupportedArchitectureError, match="mystery"):
        engine.plan(recipe)
    generic = Recipe.from_dict({"method": "simple_average", "target_modules": ["encoder"],
                                "models": [{"model": str(tmp_path / n), "task": n} for n in ("a", "b")]})
    engine.close_plan(engine.plan(generic))  # explicit prefixes: any safetensors model merges


# ----------------------------------------------------------------------------- head decisions


def labelled(names):
    return {"id2label": {str(i): n for i, n in enumerate(names)}}


def dataset_dir(tmp_path, names, name="data"):
    data = datasets.Dataset.from_dict({"label": list(range(len(names)))},
                                      features=datasets.Features({"label": datasets.ClassLabel(names=names)}))
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / name))
    return DatasetRef(str(tmp_path / name))


def test_a_head_that_fits_is_kept_with_the_dataset_labels(tmp_path):
    decision = decide_head("x", head_rows=3, config=labelled(["a", "b", "c"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"]))
    assert not decision.reinitialized and decision.rows is None and decision.label_source == "dataset"


def test_reordered_labels_permute_the_head_rows(tmp_path):
    decision = decide_head("x", head_rows=3, config=labelled(["c", "a", "b"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"]))
    assert decision.rows == (1, 2, 0) and decision.labels == {0: "a", 1: "b", 2: "c"}


def test_labels_that_disagree_with_the_dataset_are_an_error(tmp_path):
    with pytest.raises(HeadMismatchError, match="'zebra'"):
        decide_head("x", head_rows=3, config=labelled(["a", "zebra", "c"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"]))


def test_a_head_of_the_wrong_size_is_reinitialised_and_says_why(tmp_path):
    decision = decide_head("x", head_rows=1000, config=labelled([f"n{i}" for i in range(1000)]),
                           dataset=dataset_dir(tmp_path, ["a", "b"]))
    assert decision.reinitialized and "1000 outputs" in decision.reason and len(decision.labels) == 2


def test_registry_labels_and_the_models_own():
    eurosat = decide_head("eurosat", head_rows=10, config=None, dataset=None)
    assert eurosat.label_source == "registry" and len(eurosat.labels) == 10
    own = [f"class {i}" for i in range(10)]
    trusted = decide_head("eurosat", head_rows=10, config=labelled(own), dataset=None)
    assert trusted.label_source == "config" and list(trusted.labels.values()) == own  # a guess never overrides the model
    assert decide_head("eurosat", head_rows=4, config=None, dataset=None).reinitialized


def test_dataset_label_errors(tmp_path):
    with pytest.raises(DatasetError, match="no split 'validation'"):
        read_dataset_labels(DatasetRef(dataset_dir(tmp_path, ["a"]).path, split="validation"))
    plain = datasets.Dataset.from_dict({"text": ["x"]})
    datasets.DatasetDict({"test": plain}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match="no ClassLabel"):
        read_dataset_labels(DatasetRef(str(tmp_path / "plain")))
    assert read_dataset_labels(DatasetRef("org/remote-dataset")) is None  # not read at plan time


def test_reinitialised_and_reordered_heads_in_a_real_merge(fixtures, tmp_path):
    # digits_parity's dataset with its classes swapped: the head must be permuted to match
    swapped = tmp_path / "parity_swapped"
    data = datasets.load_from_disk(str(fixtures.datasets["digits_parity"]))
    features = data["test"].features.copy()
    features["label"] = datasets.ClassLabel(names=["odd", "even"])
    data = data.map(lambda row: {"label": 1 - row["label"]}).cast(features)
    data.save_to_disk(str(swapped))
    # the base model used for a 3-class task: its 10-class head does not fit
    three = tmp_path / "three"
    small = datasets.load_from_disk(str(fixtures.datasets["digits_low"]))
    small = small.filter(lambda row: row["label"] < 3)
    small = small.cast_column("label", datasets.ClassLabel(names=["0", "1", "2"]))
    small.save_to_disk(str(three))
    recipe = Recipe.from_dict({
        "method": "simple_average", "base_model": str(fixtures.base),
        "models": [
            {"model": str(fixtures.models["digits_parity"]), "task": "digits_parity", "dataset": str(swapped)},
            {"model": str(fixtures.base), "task": "first_three", "dataset": str(three)},
        ],
    })
    merge_plan = engine.plan(recipe)
    decisions = {h.task: h.decision for h in merge_plan.heads}
    engine.execute(merge_plan, tmp_path / "out")
    assert decisions["digits_parity"].rows == (1, 0)
    assert decisions["first_three"].reinitialized
    parity = load_file(tmp_path / "out" / "heads" / "digits_parity" / "model.safetensors")
    original = load_file(fixtures.models["digits_parity"] / "model.safetensors")
    assert torch.equal(parity["classifier.weight"], original["classifier.weight"][[1, 0]])
    config = json.loads((tmp_path / "out" / "heads" / "first_three" / "config.json").read_text())
    assert config["hubmerge_head"]["reinitialized"] and len(config["id2label"]) == 3
    head = load_file(tmp_path / "out" / "heads" / "first_three" / "model.safetensors")
    assert head["classifier.weight"].shape == (3, 128) and head["classifier.weight"].abs().max() <= 1 / 128**0.5
    card = render_card(collect_card(tmp_path / "out"))
    assert "first_three" in card.text and "re-initialized" in card.text and "not meaningful" in card.text
    model = load_merged(tmp_path / "out", "digits_parity")
    assert model_labels(model) == {0: "odd", 1: "even"}
    assert accuracy(model, swapped) > 0.8


# ----------------------------------------------------------------------------- loading


def test_load_merged_equals_the_merged_backbone_with_each_head(fixtures, merged):
    evaluator = TaskEvaluator.load(fixtures)
    backbones = [backbone_of(load_tensors(fixtures.models[t]), fixtures.backbone) for t in fixtures.tasks]
    by_hand = evaluator.evaluate(simple_average(backbones))
    assert model_tasks(merged) == list(fixtures.tasks)
    for task in fixtures.tasks:
        model = load_merged(merged, task)
        assert model_labels(model) == {int(k): v for k, v in json.loads(
            (fixtures.models[task] / "config.json").read_text())["id2label"].items()}
        assert accuracy(model, fixtures.datasets[task]) == pytest.approx(by_hand[task])


def test_the_root_loads_with_plain_transformers_as_the_default_task(merged):
    from transformers import AutoModelForImageClassification

    plain = AutoModelForImageClassification.from_pretrained(merged).eval()
    ours = load_merged(merged)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, ours(x).logits)


def test_unknown_task(merged):
    with pytest.raises(UnknownTaskError) as info:
        load_merged(merged, "cifar10")
    assert "digits_low" in str(info.value)
    with pytest.raises(UnknownTaskError, match="heads"):
        load_merged(merged / "heads" / "digits_low", "x")


def test_load_classifier_with_another_models_head(fixtures):
    base_parity = load_classifier(fixtures.base, head_from=fixtures.models["digits_parity"])
    assert model_labels(base_parity) == {0: "even", 1: "odd"}
    own = load_classifier(fixtures.models["digits_parity"])
    assert accuracy(own, fixtures.datasets["digits_parity"]) > accuracy(base_parity, fixtures.datasets["digits_parity"])


def test_loading_from_the_hub(merged, local_hub):
    from huggingface_hub import HfApi

    repo_id = f"alice/merged-{uuid.uuid4().hex[:6]}"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id)
    api.upload_folder(folder_path=merged, repo_id=repo_id)
    assert model_tasks(repo_id) == model_tasks(merged)
    remote = load_merged(f"{repo_id}@{api.model_info(repo_id).sha}", "digits_rotated")
    local = load_merged(merged, "digits_rotated")
    for (name, a), (_, b) in zip(remote.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), name


def test_torchvision_resnet_merge_round_trip(tmp_path):
    torch.manual_seed(0)
    paths = [export_torchvision_resnet("resnet18", tmp_path / f"m{i}", num_classes=3 + i) for i in range(2)]
    tensors = load_file(paths[1] / "model.safetensors")
    tensors["bn1.num_batches_tracked"] = torch.tensor(99)
    save_file(tensors, paths[1] / "model.safetensors")
    recipe = Recipe.from_dict({"method": "simple_average",
                               "models": [{"model": str(p), "task": f"t{i}"} for i, p in enumerate(paths)]})
    merge_plan = engine.plan(recipe)
    assert merge_plan.family.name == "torchvision-resnet" and "fc.weight" not in {t.name for t in merge_plan.tensors if t.action == "merge"}
    engine.execute(merge_plan, tmp_path / "out")
    out = load_file(tmp_path / "out" / "model.safetensors")
    first = load_file(paths[0] / "model.safetensors")
    assert out["bn1.num_batches_tracked"].dtype == torch.int64 and torch.equal(out["bn1.num_batches_tracked"], first["bn1.num_batches_tracked"])
    model = load_merged(tmp_path / "out", "t1")
    import torchvision

    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert model_labels(model) == {i: f"LABEL_{i}" for i in range(4)}


def test_torchvision_imagenet_weights_need_the_internet(tmp_path, monkeypatch):
    from hubmerge.errors import HubError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(HubError, match="weights=None"):
        export_torchvision_resnet("resnet18", tmp_path / "m", weights="DEFAULT")
    with pytest.raises(UnsupportedArchitectureError):
        export_torchvision_resnet("vgg16", tmp_path / "v")


# ----------------------------------------------------------------------------- processors


def test_processors_by_stage(fixtures, merged, tmp_path):
    from PIL import Image

    images = [Image.new("L", (40, 30), 128), Image.new("RGB", (8, 8))]
    assert load_processor(merged)(images).shape == (2, 3, 32, 32)
    assert "ConvNextImageProcessor" in describe_processor(merged)
    tv = export_torchvision_resnet("resnet18", tmp_path / "tv", num_classes=2)
    assert load_processor(tv, stage="test")(images).shape == (2, 3, 224, 224)
    assert load_processor(tv, stage="train")(images).shape == (2, 3, 224, 224)
    names = [type(t).__name__ for t in torchvision_transforms("train").transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in torchvision_transforms("val").transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert "Resize(256)" in describe_processor(tv)
    shutil.rmtree(tv)
