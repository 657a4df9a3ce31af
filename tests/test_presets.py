"""Built-in presets (hubmerge.presets), down to planning the real 8-task ConvNeXt set from headers."""

from __future__ import annotations

import json
import struct

import pytest
import yaml

from hubmerge.cli import main
from hubmerge.errors import UnknownPresetError
from hubmerge.presets import known_presets, load_preset
from hubmerge.recipe import Recipe

from ._fixture_helpers import offline_env

TASKS = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]


def test_the_8_task_preset():
    assert "convnext-base-224-8tasks" in known_presets()
    recipe = load_preset("convnext-base-224-8tasks")
    assert recipe.tasks == TASKS and recipe.method == "simple_average" and recipe.resolved_default_task == "sun397"
    assert str(recipe.base_model) == "facebook/convnext-base-224" and recipe.target_modules == ("convnext",)
    repos = [str(m.model) for m in recipe.models]
    assert repos == [f"tanganke/convnext-base-224_{t}_sgd_batch-size-64_lr-0.01_steps-4000" for t in TASKS]
    datasets = {m.task: m.dataset for m in recipe.models}
    assert (datasets["svhn"].path, datasets["svhn"].name, datasets["svhn"].split) == ("ufldl-stanford/svhn", "cropped_digits", "test")
    assert datasets["stanford-cars"].path == "tanganke/stanford_cars" and datasets["mnist"].path == "ylecun/mnist"


def test_unknown_preset_lists_the_known():
    with pytest.raises(UnknownPresetError, match="convnext-base-224-8tasks"):
        load_preset("convnext-large")
    with pytest.raises(UnknownPresetError, match="Did you mean 'convnext-base-224-8tasks'"):
        load_preset("convnext-base-224-8task")


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


def test_plan_cli_with_the_preset_under_hf_hub_offline(tmp_path):
    import subprocess
    import sys

    code = "from hubmerge.cli import main; raise SystemExit(main(['plan', '--preset', 'convnext-base-224-8tasks']))"
    done = subprocess.run([sys.executable, "-c", code], env=offline_env(tmp_path / "hf"), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "HubError" in done.stderr and "'facebook/convnext-base-224'" in done.stderr and "HF_HUB_OFFLINE" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3


def test_a_yaml_dump_of_the_preset_is_a_valid_recipe(tmp_path):
    recipe = load_preset("convnext-base-224-8tasks")
    assert Recipe.from_yaml(yaml.safe_dump(recipe.to_dict())) == recipe
