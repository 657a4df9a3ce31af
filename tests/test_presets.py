"""Built-in presets and FusionBench-style configs, down to planning the real 8-task ConvNeXt set."""

from __future__ import annotations

import json
import struct

import pytest
import yaml

from hubmerge.cli import main
from hubmerge.errors import RecipeError, UnknownPresetError
from hubmerge.presets import known_presets, load_preset
from hubmerge.recipe import Recipe

FB_TIES = """
method:
  _target_: fusion_bench.method.TiesMergingAlgorithm
  scaling_factor: 0.3
  threshold: 20
  remove_keys: []
  merge_func: sum
modelpool:
  _target_: fusion_bench.modelpool.ConvNextForImageClassificationPool
  _recursive_: False
  models:
    _pretrained_: facebook/convnext-base-224
    eurosat: tanganke/convnext-base-224_eurosat_sgd_batch-size-64_lr-0.01_steps-4000
    svhn: tanganke/convnext-base-224_svhn_sgd_batch-size-64_lr-0.01_steps-4000
taskpool:
  test_datasets:
    eurosat: {_target_: datasets.load_dataset, path: tanganke/eurosat, split: test}
    svhn:
      _target_: datasets.load_dataset
      _args_: [ufldl-stanford/svhn, cropped_digits]
      split: test
"""


def test_the_8_task_preset():
    assert "convnext-base-224-8tasks" in known_presets()
    recipe = load_preset("convnext-base-224-8tasks")
    assert recipe.tasks == ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
    assert str(recipe.base_model) == "facebook/convnext-base-224" and recipe.target_modules == ("convnext",)
    repos = [str(m.model) for m in recipe.models]
    assert repos[0] == "tanganke/convnext-base-224_sun397_sgd_batch-size-64_lr-0.01_steps-4000"
    datasets = {m.task: m.dataset for m in recipe.models}
    assert (datasets["svhn"].path, datasets["svhn"].name, datasets["svhn"].split) == ("ufldl-stanford/svhn", "cropped_digits", "test")
    assert datasets["stanford-cars"].path == "tanganke/stanford_cars" and datasets["mnist"].path == "ylecun/mnist"


def test_unknown_preset_lists_the_known():
    with pytest.raises(UnknownPresetError, match="convnext-base-224-8tasks"):
        load_preset("convnext-large")


def test_fusionbench_ties_config():
    recipe = Recipe.from_yaml(FB_TIES)
    assert recipe.method == "ties"
    assert recipe.parameters == {"density": 0.2, "scaling_factor": 0.3, "disjoint_merge": "sum"}
    assert str(recipe.base_model) == "facebook/convnext-base-224" and recipe.tasks == ["eurosat", "svhn"]
    assert recipe.target_modules == ("convnext",)
    svhn = recipe.models[1].dataset
    assert (svhn.path, svhn.name, svhn.split) == ("ufldl-stanford/svhn", "cropped_digits", "test")


@pytest.mark.parametrize(
    "method, expected",
    [
        ("{_target_: fusion_bench.method.SimpleAverageAlgorithm}", ("simple_average", {})),
        ("{_target_: fusion_bench.method.TaskArithmeticAlgorithm, scaling_factor: 0.5}", ("task_arithmetic", {"scaling_factor": 0.5})),
        ("{name: ties_merging, threshold: 0.1, merge_func: mean}", ("ties", {"density": 0.1, "disjoint_merge": "mean", "scaling_factor": 0.3})),
    ],
)
def test_fusionbench_methods(method, expected):
    text = f"method: {method}\nmodelpool:\n  models:\n    _pretrained_: {{config_path: a/base, pretrained: true}}\n    t1: a/one\n    t2: a/two\n"
    recipe = Recipe.from_yaml(text)
    assert (recipe.method, dict(recipe.parameters)) == expected
    assert str(recipe.base_model) == "a/base"


def test_fusionbench_weighted_average_and_named_taskpool():
    text = """
method: {_target_: fusion_bench.method.WeightedAverageAlgorithm, normalize: true, weights: [0.25, 0.75]}
modelpool: {models: {eurosat: a/e, mnist: a/m}}
taskpool:
  defaults:
    - /dataset/image_classification/test@test_datasets: [eurosat, mnist]
"""
    recipe = Recipe.from_yaml(text)
    assert recipe.method == "weighted_average" and [m.weight for m in recipe.models] == [0.25, 0.75]
    assert recipe.models[0].dataset.path == "tanganke/eurosat" and recipe.models[1].dataset.path == "ylecun/mnist"


@pytest.mark.parametrize(
    "text, message",
    [
        ("method: {_target_: fusion_bench.method.AdaMerging}\nmodelpool: {models: {a: b/c}}", "no hubmerge equivalent"),
        ("method: {name: ties_merging, merge_func: max}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "merge_func"),
        ("method: {name: ties_merging, remove_keys: [x]}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "remove_keys"),
        ("method: {name: simple_average}\nmodelpool: {models: {}}", "modelpool.models"),
        ("method: {name: weighted_average, weights: [1]}\nmodelpool: {models: {a: b/c, d: e/f}}", "one number per task"),
    ],
)
def test_fusionbench_configs_we_cannot_do_exactly_are_refused(text, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_yaml(text)


# ----------------------------------------------------------------------------- planning the real set


def _sparse_safetensors(path, tensors):
    """A safetensors file with a real header and sparse (all-zero, no disk) data of the right size."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)


@pytest.fixture(scope="module")
def real_shaped_hub(tmp_path_factory):
    """A local Hub holding the preset's 9 repos at convnext-base-224 shape (sparse files: headers are real)."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from hubmerge.hub.localhub import LocalHub
    from hubmerge.hub.localhub.storage import Operation, Store

    recipe = load_preset("convnext-base-224-8tasks")
    heads = {"sun397": 397, "stanford-cars": 196, "resisc45": 45, "eurosat": 10, "svhn": 10, "gtsrb": 43, "mnist": 10, "dtd": 47}
    root = tmp_path_factory.mktemp("realhub")
    store = Store(root)
    with torch.device("meta"):
        base = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3]))
    shapes = [(k, tuple(v.shape)) for k, v in base.state_dict().items()]
    for repo, labels in [(str(recipe.base_model), 1000)] + [(str(m.model), heads[m.task]) for m in recipe.models]:
        work = tmp_path_factory.mktemp("w")
        model_shapes = [(k, (labels, *s[1:]) if k.startswith("classifier.") else s) for k, s in shapes]
        _sparse_safetensors(work / "model.safetensors", model_shapes)
        config = {"model_type": "convnext", "hidden_sizes": [128, 256, 512, 1024], "depths": [3, 3, 27, 3],
                  "id2label": {str(i): f"c{i}" for i in range(labels)}}
        blob = "%064x" % (hash(repo) & (2**256 - 1))
        (work / "model.safetensors").rename(store.blob_path(blob))
        config_blob = store.put_bytes(json.dumps(config).encode())
        store.create_repo("model", repo, private=False)
        store.apply_commit("model", repo, "main", [Operation("add", "model.safetensors", blob),
                                                   Operation("add", "config.json", config_blob.sha256)], message="upload")
    with LocalHub(root) as hub:
        yield hub


def test_plan_the_8_task_preset_from_headers_alone(real_shaped_hub, capsys):
    from hubmerge import engine

    real_shaped_hub.stats.reset()
    merge_plan = engine.plan(load_preset("convnext-base-224-8tasks"), endpoint=real_shaped_hub.endpoint)
    engine.close_plan(merge_plan)
    assert merge_plan.counts["merged"] == 342 and len(merge_plan.heads) == 8  # every convnext.* tensor
    assert {h.task: h.decision.reinitialized for h in merge_plan.heads} == dict.fromkeys(
        ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"], False)
    assert 2.7e9 < merge_plan.bytes_to_read < 2.9e9  # 8 backbones + heads; a simple average skips the base
    assert real_shaped_hub.stats.bytes_sent < 2e6  # headers and configs, not 3 GB of weights


def test_plan_cli_with_the_preset(real_shaped_hub, capsys, monkeypatch):
    assert main(["plan", "--preset", "convnext-base-224-8tasks", "--json", "--endpoint", real_shaped_hub.endpoint]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "convnext" and data["counts"]["head"] == 16


def test_plan_cli_with_the_preset_when_the_hub_does_not_have_it(local_hub, capsys):
    assert main(["plan", "--preset", "convnext-base-224-8tasks"]) == 1
    err = capsys.readouterr().err
    assert "RepoNotFoundError" in err and "facebook/convnext-base-224" in err and "Traceback" not in err


def test_plan_cli_with_the_preset_offline(hub_offline, capsys):
    assert main(["plan", "--preset", "convnext-base-224-8tasks"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "facebook/convnext-base-224" in err


def test_a_yaml_dump_of_the_preset_is_a_valid_recipe(tmp_path):
    recipe = load_preset("convnext-base-224-8tasks")
    assert Recipe.from_yaml(yaml.safe_dump(recipe.to_dict())) == recipe
