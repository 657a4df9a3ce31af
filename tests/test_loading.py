"""Loading merged outputs and input models as standard classifiers (hubmerge.vision.loading)."""

from __future__ import annotations

import importlib
import json
import shutil
import uuid

import pytest
import torch
from safetensors.torch import load_file, save_file

from hubmerge import engine
from hubmerge.errors import HubError, ModelFilesNotFoundError, RecipeError, UnknownTaskError, WeightsError
from hubmerge.fixtures import accuracy, build_fixtures
from hubmerge.recipe import Recipe
from hubmerge.vision.export import export_torchvision_resnet
from hubmerge.vision.loading import load_classifier, load_merged, model_labels, model_tasks

from ._fixture_helpers import TaskEvaluator, backbone_of, load_tensors, simple_average


@pytest.fixture(scope="module")
def fixtures():
    return build_fixtures(family="convnext")


@pytest.fixture(scope="module")
def merged(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "out"
    recipe = Recipe.from_dict({
        "method": "simple_average", "base_model": str(fixtures.base), "default_task": fixtures.tasks[1],
        "models": [{"model": str(p), "task": t, "dataset": str(fixtures.datasets[t])} for t, p in fixtures.models.items()],
    })
    engine.merge(recipe, out)
    return out


def test_each_task_is_the_merged_backbone_with_its_fine_tuned_head(fixtures, merged):
    evaluator = TaskEvaluator.load(fixtures)
    backbones = [backbone_of(load_tensors(fixtures.models[t]), fixtures.backbone) for t in fixtures.tasks]
    by_hand = evaluator.evaluate(simple_average(backbones))
    assert model_tasks(merged) == list(fixtures.tasks)
    for task in fixtures.tasks:
        model = load_merged(merged, task)
        own = json.loads((fixtures.models[task] / "config.json").read_text())["id2label"]
        assert model_labels(model) == {int(k): v for k, v in own.items()}
        assert accuracy(model, fixtures.datasets[task]) == by_hand[task]


def test_the_root_loads_with_plain_transformers_as_the_default_task(fixtures, merged):
    from transformers import AutoModelForImageClassification

    plain = AutoModelForImageClassification.from_pretrained(merged).eval()
    ours = load_merged(merged)
    default = fixtures.tasks[1]
    assert json.loads((merged / "hubmerge_heads.json").read_text())["default_task"] == default
    assert plain.config.id2label == ours.config.id2label == load_merged(merged, default).config.id2label
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, ours(x).logits, rtol=0, atol=0)


def test_unknown_task_lists_the_outputs_tasks(fixtures, merged):
    with pytest.raises(UnknownTaskError) as info:
        load_merged(merged, "cifar10")
    assert all(task in str(info.value) for task in fixtures.tasks) and info.value.known == tuple(fixtures.tasks)
    with pytest.raises(UnknownTaskError, match="Did you mean 'digits_low'"):
        load_merged(merged, "digit_low")
    for task in ("x", None):  # a plain model, not a merged output: no "unknown task 'None'. Known tasks: ."
        with pytest.raises(UnknownTaskError) as info:
            load_merged(fixtures.models["digits_low"], task)
        assert str(info.value).startswith(f"'task': '{fixtures.models['digits_low']}' holds no heads/<task>/, "
                                          "so it is no hubmerge output; load a plain model with transformers'")
    assert model_tasks(fixtures.models["digits_low"]) == []


def test_the_folder_above_the_models_is_no_model(fixtures, tmp_path):
    """`evaluate FOLDER` with the folder that holds the fine-tunes said it names no evaluation datasets, "a plain
    model", and `load_merged` called it no hubmerge output: it is no model at all, and the models are below."""
    from hubmerge.evaluation import evaluate_model

    parent = fixtures.models["digits_low"].parent
    said = f"'{parent}' holds no model: expected model.safetensors or model.safetensors.index.json, found no "
    for call in (lambda: load_merged(parent, "digits_low"), lambda: load_classifier(parent),
                 lambda: evaluate_model(parent), lambda: model_tasks(parent)):
        with pytest.raises(ModelFilesNotFoundError) as info:
            call()
        assert str(info.value).startswith(said) and "one folder down (" in str(info.value)
        assert fixtures.models["digits_low"].name in str(info.value)
    with pytest.raises(RecipeError, match="is a local folder, which has no revisions; revision= is for Hub repos"):
        load_merged(fixtures.models["digits_low"], revision="main")  # it was ignored
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelFilesNotFoundError, match="found no .safetensors file. hubmerge reads safetensors "
                       "weights only.$"):
        load_classifier(tmp_path)


def test_a_path_object_is_a_folder_never_a_repo_id(fixtures, tmp_path, monkeypatch):
    """str(Path("./merged")) is 'merged': a missing folder given as a Path was asked of the Hub as repo
    'merged' (RepoNotFoundError, or that repo's files had it existed), not said to be missing."""
    from pathlib import Path

    from hubmerge.recipe import ModelRef

    monkeypatch.chdir(tmp_path)
    assert ModelRef.parse(Path("merged")) == ModelRef(path=Path("merged"))
    for call in (lambda: load_merged(Path("merged")), lambda: model_tasks(Path("merged")),
                 lambda: load_classifier(Path("merged")),
                 lambda: load_classifier(fixtures.base, head_from=Path("merged"))):
        with pytest.raises(ModelFilesNotFoundError, match="^'merged' does not exist$"):
            call()
    (tmp_path / "merged").write_text("x")
    with pytest.raises(ModelFilesNotFoundError, match="^'merged' is a file, not a model directory$"):
        load_merged(Path("merged"))


def test_an_output_whose_inputs_name_no_task_loads_as_its_root(fixtures, tmp_path):
    """No heads/ and no index: load_merged called it "no hubmerge output" and loaded nothing."""
    recipe = Recipe.from_dict({"method": "task_arithmetic", "base_model": str(fixtures.base),
                               "models": [str(path) for path in fixtures.models.values()]})
    engine.merge(recipe, tmp_path / "out")
    root = load_merged(tmp_path / "out")
    plain = load_classifier(tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(root.state_dict().values(), plain.state_dict().values()))
    first = next(iter(fixtures.models.values()))
    assert torch.equal(root.classifier.weight, load_file(first / "model.safetensors")["classifier.weight"])
    with pytest.raises(UnknownTaskError, match="keeps no per-task heads, so none for 'digits_low'"):
        load_merged(tmp_path / "out", "digits_low")


def test_an_index_naming_a_task_outside_heads_is_refused(merged, tmp_path):
    """hubmerge_heads.json comes with a downloaded repo: a task "../../x" would load files outside heads/."""
    copy = tmp_path / "out"
    shutil.copytree(merged, copy)
    index = json.loads((copy / "hubmerge_heads.json").read_text())
    index["default_task"] = "../../elsewhere"
    (copy / "hubmerge_heads.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="names a task no hubmerge output holds: task name '../../elsewhere'"):
        load_merged(copy)


def test_a_shard_index_naming_files_outside_the_model_is_refused(merged, tmp_path):
    """model.safetensors.index.json comes with a downloaded repo too: its weight_map was followed to any file
    of this machine, read as the model's weights."""
    copy = tmp_path / "out"
    shutil.copytree(merged, copy)
    elsewhere = tmp_path / "private.safetensors"
    shutil.copy(copy / "model.safetensors", elsewhere)
    weights = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()  # beside it, model.safetensors is the model, as in transformers
    for name in (str(elsewhere), "../private.safetensors"):
        (copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(weights, name)}))
        with pytest.raises(WeightsError, match="points outside the model directory"):
            load_merged(copy)


def test_model_safetensors_beside_a_stale_shard_index_is_the_model_loaded(merged, tmp_path):
    """As the merge reads an input and transformers loads it: model.safetensors before an index beside it
    (shards an earlier upload left); taken the other way round, the evaluation ran the stale shards."""
    copy = tmp_path / "out"
    shutil.copytree(merged, copy)
    weights = load_file(copy / "model.safetensors")
    save_file({name: torch.zeros_like(t) for name, t in weights.items()}, copy / "model-00001-of-00001.safetensors")
    index = {"weight_map": dict.fromkeys(weights, "model-00001-of-00001.safetensors")}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    state = load_merged(copy).state_dict()
    assert all(torch.equal(state[name], t) for name, t in weights.items() if name in state)
    assert any(t.abs().sum() > 0 for t in weights.values())


def test_loading_is_strict_and_names_what_does_not_fit(merged, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(merged, broken)
    tensors = load_file(broken / "model.safetensors")
    gone = next(name for name in tensors if name.startswith("convnext.encoder"))
    del tensors[gone]
    tensors["convnext.extra"] = torch.zeros(1)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(WeightsError) as info:
        load_merged(broken)
    assert gone in str(info.value) and "convnext.extra" in str(info.value)


def test_load_classifier_with_another_models_head(fixtures):
    base_parity = load_classifier(fixtures.base, head_from=fixtures.models["digits_parity"])
    assert model_labels(base_parity) == {0: "even", 1: "odd"}
    own = load_classifier(fixtures.models["digits_parity"])
    assert accuracy(own, fixtures.datasets["digits_parity"]) > accuracy(base_parity, fixtures.datasets["digits_parity"])
    crossed = load_classifier(fixtures.models["digits_low"], head_from=fixtures.models["digits_parity"])
    head = load_file(fixtures.models["digits_parity"] / "model.safetensors")["classifier.weight"]
    assert torch.equal(crossed.classifier.weight, head) and crossed.classifier.out_features == 2



def test_a_head_saved_in_another_dtype_runs_on_the_backbone(fixtures, tmp_path):
    """A float16 or bfloat16 fine-tune's head on a float32 base (the base row of --compare-inputs) is cast to
    the backbone's dtype: the forward pass raised 'mat1 and mat2 must have the same dtype'."""
    half = tmp_path / "half"
    shutil.copytree(fixtures.models["digits_parity"], half)
    tensors = load_file(half / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()},
              half / "model.safetensors", metadata={"format": "pt"})
    model = load_classifier(fixtures.base, head_from=half)
    assert model.classifier.weight.dtype == torch.float32
    assert torch.equal(model.classifier.weight, tensors["classifier.weight"].to(torch.bfloat16).float())
    assert model(torch.zeros(1, 3, 32, 32)).logits.shape == (1, 2)

@pytest.fixture
def published(merged, local_hub, tmp_path, monkeypatch):
    """``(repo_id, sha)`` of ``merged`` uploaded to the local Hub, with an empty cache in ``tmp_path/cache``."""
    from huggingface_hub import HfApi, constants

    repo_id = f"alice/merged-{uuid.uuid4().hex[:6]}"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id)
    api.upload_folder(folder_path=merged, repo_id=repo_id)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    return repo_id, api.model_info(repo_id).sha


def test_loading_from_the_hub_downloads_one_head(merged, published, tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo_id, sha = published
    assert model_tasks(repo_id) == model_tasks(merged)
    remote = load_merged(f"{repo_id}@{sha}", "digits_rotated")
    local = load_merged(merged, "digits_rotated")
    for (name, a), (_, b) in zip(remote.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), name
    snapshot = next((tmp_path / "cache").glob(f"models--alice--{repo_id.split('/')[1]}/snapshots/{sha}"))
    assert sorted(p.name for p in (snapshot / "heads").iterdir()) == ["digits_rotated"]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what was downloaded loads again from the cache
    again = load_merged(f"{repo_id}@{sha}", "digits_rotated")
    assert torch.equal(again.classifier.weight, remote.classifier.weight)


def test_a_hub_models_image_processor_is_downloaded_with_its_config(merged, published):
    """Into an empty cache: the files a processor is read from include preprocessor_config.json."""
    from PIL import Image

    from hubmerge.vision.processors import describe_processor, load_processor

    repo_id, sha = published
    assert describe_processor(f"{repo_id}@{sha}") == describe_processor(merged)
    image = [Image.new("RGB", (40, 30), (200, 10, 90))]
    assert torch.equal(load_processor(f"{repo_id}@{sha}")(image), load_processor(merged)(image))


def test_a_plain_hub_model_is_asked_for_its_tasks_without_the_librarys_bar_or_warning(
    fixtures, local_hub, tmp_path, monkeypatch, capsys, caplog
):
    """It lacks hubmerge_heads.json: huggingface_hub drew "Fetching 0 files" and logged "No files matched
    ['hubmerge_heads.json', 'hubmerge_recipe.yaml']" before hubmerge's own answer; its bars come back after."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module, not its tqdm class

    repo_id = f"alice/plain-{uuid.uuid4().hex[:6]}"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id)
    api.upload_folder(folder_path=fixtures.models["digits_low"], repo_id=repo_id)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # the suite turns them off by environment
    enable_progress_bars()
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert model_tasks(repo_id) == []
    assert "Fetching" not in capsys.readouterr().err
    assert not [record for record in caplog.records if "No files matched" in record.getMessage()]
    assert not are_progress_bars_disabled()


def test_torchvision_resnet18_merge_copies_int_buffers_and_loads_back(tmp_path):
    torch.manual_seed(0)
    paths = [export_torchvision_resnet("resnet18", tmp_path / f"m{i}", num_classes=3 + i,
                                       id2label={j: f"c{j}" for j in range(3 + i)}) for i in range(2)]
    tensors = load_file(paths[1] / "model.safetensors")
    tensors["bn1.num_batches_tracked"] = torch.tensor(99)
    save_file(tensors, paths[1] / "model.safetensors")
    recipe = Recipe.from_dict({"method": "simple_average",
                               "models": [{"model": str(p), "task": f"t{i}"} for i, p in enumerate(paths)]})
    merge_plan = engine.plan(recipe)
    assert merge_plan.family.name == "torchvision-resnet"
    actions = {t.name: t.action for t in merge_plan.tensors}
    assert actions["layer1.0.conv1.weight"] == "merge" and actions["bn1.num_batches_tracked"] == "copy"
    engine.execute(merge_plan, tmp_path / "out")
    out = load_file(tmp_path / "out" / "model.safetensors")
    first, second = (load_file(p / "model.safetensors") for p in paths)
    assert out["bn1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(out["bn1.num_batches_tracked"], first["bn1.num_batches_tracked"])
    torch.testing.assert_close(out["layer1.0.conv1.weight"], (first["layer1.0.conv1.weight"] + second["layer1.0.conv1.weight"]) / 2)
    import torchvision

    model = load_merged(tmp_path / "out", "t1")
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 4
    assert torch.equal(model.fc.weight, second["fc.weight"]) and torch.equal(model.layer1[0].conv1.weight, out["layer1.0.conv1.weight"])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert model_labels(model) == {j: f"c{j}" for j in range(4)}
    assert model_labels(load_merged(tmp_path / "out")) == {j: f"c{j}" for j in range(3)}
    assert model_labels(load_classifier(paths[0])) == {j: f"c{j}" for j in range(3)}


def test_a_task_gets_what_the_merge_kept_for_it_outside_target_modules(tmp_path):
    """With target_modules narrowed to the ResNet's stages, conv1 and bn1 are kept per task in heads/<task>/ (as
    the plan says, and as the card's transformers sample loads them), but load_merged took only fc from there:
    every other task ran on the default task's stem, and the evaluation measured that model."""
    torch.manual_seed(0)
    paths = [export_torchvision_resnet("resnet18", tmp_path / f"m{i}", num_classes=2 + i) for i in range(2)]
    recipe = Recipe.from_dict({"method": "simple_average", "target_modules": ["layer1", "layer2", "layer3", "layer4"],
                               "models": [{"model": str(p), "task": f"t{i}"} for i, p in enumerate(paths)]})
    engine.merge(recipe, tmp_path / "out")
    inputs = [load_file(p / "model.safetensors") for p in paths]
    merged = load_file(tmp_path / "out" / "model.safetensors")
    for i, task in enumerate(("t0", "t1")):
        model = load_merged(tmp_path / "out", task).state_dict()
        for name in ("conv1.weight", "bn1.weight", "bn1.running_var", "fc.weight"):
            assert torch.equal(model[name], inputs[i][name]), (task, name)
        assert torch.equal(model["layer1.0.conv1.weight"], merged["layer1.0.conv1.weight"])
    fine_tune = load_classifier(paths[0], head_from=tmp_path / "out" / "heads" / "t1").state_dict()
    assert torch.equal(fine_tune["conv1.weight"], inputs[0]["conv1.weight"])  # another model's head: its fc alone
    assert torch.equal(fine_tune["fc.weight"], inputs[1]["fc.weight"])


def test_a_torchvision_config_written_by_hand_leaves_out_what_the_tensors_say(tmp_path):
    """The torchvision folder's config.json is optional, but one without num_classes and id2label (written by
    hand from the README's example) made load_classifier, so evaluate --compare-inputs, fail with "unexpected
    error: KeyError('num_classes')"; one without its architecture refused the model as torchvision 'None'."""
    import torchvision

    torch.manual_seed(0)
    folder = export_torchvision_resnet("resnet18", tmp_path / "m", num_classes=3)
    tensors = load_file(folder / "model.safetensors")
    for config in ({"hubmerge_family": "torchvision-resnet", "architecture": "resnet18"},
                   {"hubmerge_family": "torchvision-resnet", "num_classes": 3}):
        (folder / "config.json").write_text(json.dumps(config))
        model = load_classifier(folder)
        assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 3
        assert torch.equal(model.fc.weight, tensors["fc.weight"]) and model_labels(model)[2] == "LABEL_2"
    (folder / "config.json").write_text(json.dumps({"hubmerge_family": "torchvision-resnet", "architecture": "resnet34"}))
    with pytest.raises(WeightsError, match="do not fit the model its config describes"):  # the config still rules
        load_classifier(folder)


def test_offline_a_file_the_cache_never_got_is_not_called_missing_from_the_model(published, local_hub, tmp_path,
                                                                                monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    from hubmerge.vision.processors import load_processor

    repo_id, sha = published
    hf_hub_download(repo_id, "config.json", revision=sha, endpoint=local_hub.endpoint)  # as a merge reads it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="preprocessor_config.json of .*: HF_HUB_OFFLINE is set, and the local cache"):
        load_processor(f"{repo_id}@{sha}")  # it was "has no preprocessor_config.json: save the model's ..."
    with pytest.raises(HubError, match="the heads of .*: HF_HUB_OFFLINE is set"):
        load_merged(f"{repo_id}@{sha}", "digits_low")  # it was "holds no heads/<task>/, so it is no hubmerge output"
    (tmp_path / "plain").mkdir()  # a directory of the user's own lacks what it lacks, offline or not
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(ModelFilesNotFoundError, match="has no preprocessor_config.json: save"):
        load_processor(tmp_path / "plain")


def test_a_head_folder_without_a_config_gets_plain_labels_not_the_backbones(fixtures, tmp_path):
    """Head tensors alone (a bare model.safetensors): the backbone's id2label, of another class count,
    must not be kept for them."""
    bare = tmp_path / "bare-head"
    bare.mkdir()
    shutil.copy(fixtures.models["digits_parity"] / "model.safetensors", bare / "model.safetensors")
    model = load_classifier(fixtures.base, head_from=bare)
    assert model.classifier.out_features == 2
    assert model_labels(model) == {0: "LABEL_0", 1: "LABEL_1"} and model.config.label2id == {"LABEL_0": 0, "LABEL_1": 1}


def test_an_output_without_a_heads_index_takes_its_default_task_from_its_recipe(fixtures, merged, tmp_path):
    """Outputs written before hubmerge_heads.json: tasks from heads/, their order and default from the recipe."""
    copy = tmp_path / "out"
    shutil.copytree(merged, copy)
    (copy / "hubmerge_heads.json").unlink()
    assert model_tasks(copy) == list(fixtures.tasks)
    default = fixtures.tasks[1]
    assert torch.equal(load_merged(copy).classifier.weight, load_merged(copy, default).classifier.weight)


def test_a_private_hub_output_loads_with_the_token(merged, local_hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    repo_id = f"alice/private-merged-{uuid.uuid4().hex[:6]}"
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id, private=True)
    api.upload_folder(folder_path=merged, repo_id=repo_id)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert model_tasks(repo_id, token=local_hub.alice_token) == model_tasks(merged)
    remote = load_merged(repo_id, "digits_low", token=local_hub.alice_token)
    assert torch.equal(remote.classifier.weight, load_merged(merged, "digits_low").classifier.weight)


def test_a_hub_output_is_read_at_one_commit_though_a_push_lands_meanwhile(merged, published, local_hub, monkeypatch):
    """The index is read at the commit the repo pointed to when loading began; a push landing before the head
    is downloaded must not hand over the new commit's head (of another task order, labels or size)."""
    from huggingface_hub import HfApi
    from safetensors.torch import save

    from hubmerge.vision import loading

    repo_id, _ = published
    head = load_file(merged / "heads" / "digits_rotated" / "model.safetensors")
    read_index = loading._local_index

    def index_then_a_push_lands(*args, **kwargs):
        found = read_index(*args, **kwargs)
        HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).upload_file(
            path_or_fileobj=save({k: torch.zeros_like(v) for k, v in head.items()}),
            path_in_repo="heads/digits_rotated/model.safetensors", repo_id=repo_id)
        return found

    monkeypatch.setattr(loading, "_local_index", index_then_a_push_lands)
    model = load_merged(repo_id, "digits_rotated")
    assert torch.equal(model.classifier.weight, head["classifier.weight"])
