"""Head decisions per task: labels from the dataset, the registry or the config (hubmerge.vision.heads)."""

from __future__ import annotations

import re
from dataclasses import replace

import datasets
import pytest

import hubmerge
from hubmerge.errors import DatasetError, HeadMismatchError
from hubmerge.recipe import DatasetRef
from hubmerge.vision import classnames
from hubmerge.vision.families import family_by_name
from hubmerge.vision.heads import (
    HEADS_INDEX_FORMAT,
    HeadDecision,
    TaskHead,
    decide_head,
    head_seed,
    heads_index,
    id2label_config,
    read_dataset_labels,
    task_labels,
)


def labelled(names):
    return {"id2label": {str(i): n for i, n in enumerate(names)}}


def dataset_dir(tmp_path, names, name="data"):
    data = datasets.Dataset.from_dict({"label": list(range(len(names)))},
                                      features=datasets.Features({"label": datasets.ClassLabel(names=names)}))
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / name))
    return DatasetRef(str(tmp_path / name))


# ----------------------------------------------------------------------------- where labels come from


def test_labels_from_a_local_dataset_come_first(tmp_path):
    ref = dataset_dir(tmp_path, ["x", "y"])
    assert task_labels("eurosat", ref, labelled(["p", "q"])) == (["x", "y"], "dataset")


def test_labels_from_a_local_dataset_come_from_its_named_label_column(tmp_path):
    """The plan reads the class names the evaluation scores: the named column's (CIFAR-100's coarse_label after
    fine_label), not the first ClassLabel's; a named column of plain integers names none; a missing one is refused."""
    features = datasets.Features({"fine_label": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "coarse_label": datasets.ClassLabel(names=["x", "y"]),
                                  "target": datasets.Value("int64")})
    data = datasets.Dataset.from_dict({"fine_label": [0, 2], "coarse_label": [0, 1], "target": [1, 0]},
                                      features=features)
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "two"))
    ref = DatasetRef(str(tmp_path / "two"))
    assert read_dataset_labels(ref) == ["a", "b", "c"]
    assert task_labels("my-task", replace(ref, label_column="coarse_label"), None) == (["x", "y"], "dataset")
    assert read_dataset_labels(replace(ref, label_column="target")) is None
    with pytest.raises(DatasetError, match=r"has no column 'coarse' \(named as its label_column\)\. Its columns: "
                                           r"fine_label \(ClassLabel\), coarse_label \(ClassLabel\), target \(Value\)"):
        read_dataset_labels(replace(ref, label_column="coarse"))


def test_labels_from_the_registry_by_dataset_id_then_task_name():
    eurosat = classnames.class_names("eurosat")
    assert task_labels("my-task", DatasetRef("tanganke/eurosat"), None) == (list(eurosat), "registry")
    assert task_labels("eurosat", DatasetRef("org/private-data"), None) == (list(eurosat), "registry")
    assert task_labels("eurosat", None, None) == (list(eurosat), "registry")


def test_labels_from_the_config_and_placeholders_that_say_nothing():
    assert task_labels("my-task", None, labelled(["cat", "dog"])) == (["cat", "dog"], "config")
    assert task_labels("my-task", None, labelled(["LABEL_0", "LABEL_1"])) is None
    assert task_labels("my-task", None, None) is None


def test_config_labels_are_ordered_by_their_numeric_ids():
    """id2label keys are strings in config.json: "10" and "11" come after "9", not before "2"."""
    names = [f"class {i}" for i in range(12)]
    shuffled = {str(i): names[i] for i in reversed(range(12))}  # as a config may list them
    assert task_labels("my-task", None, {"id2label": shuffled}) == (names, "config")
    decision = decide_head("my-task", head_rows=12, config={"id2label": shuffled}, dataset=None)
    assert list(decision.labels.values()) == names and decision.rows is None


def test_dataset_label_errors(tmp_path):
    path = dataset_dir(tmp_path, ["a"]).path
    with pytest.raises(DatasetError, match=f"no split 'validation' .*, e.g. `dataset: {re.escape(path)}:test`"):
        read_dataset_labels(DatasetRef(path, split="validation"))  # at plan time, the same advice
    plain = datasets.Dataset.from_dict({"text": ["x"]})
    datasets.DatasetDict({"test": plain}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match="no ClassLabel"):
        read_dataset_labels(DatasetRef(str(tmp_path / "plain")))
    with pytest.raises(DatasetError, match="'.*missing' does not exist. Give a directory"):  # not 'not a directory'
        read_dataset_labels(DatasetRef(str(tmp_path / "missing")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="'.*file' is a file, not a folder"):
        read_dataset_labels(DatasetRef(str(tmp_path / "file")))
    assert read_dataset_labels(DatasetRef("org/remote-dataset")) is None  # not downloaded at plan time


# ----------------------------------------------------------------------------- decisions


def test_a_head_that_fits_is_kept_with_the_dataset_labels(tmp_path):
    decision = decide_head("x", head_rows=3, config=labelled(["a", "b", "c"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"]))
    assert not decision.reinitialized and decision.rows is None and decision.label_source == "dataset"
    assert decision.labels == {0: "a", 1: "b", 2: "c"} and decision.reason == ""


def test_spelling_differences_are_not_a_mismatch(tmp_path):
    decision = decide_head("x", head_rows=2, config=labelled(["Annual_Crop", "forest"]),
                           dataset=dataset_dir(tmp_path, ["annual crop", "Forest"]))
    assert decision.rows is None and decision.labels == {0: "annual crop", 1: "Forest"}


def test_reordered_labels_permute_the_head_rows(tmp_path):
    decision = decide_head("x", head_rows=3, config=labelled(["c", "a", "b"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"]))
    assert decision.rows == (1, 2, 0) and decision.labels == {0: "a", 1: "b", 2: "c"}
    assert decision.report()["reordered"] is True


def test_labels_that_disagree_with_the_dataset_are_an_error(tmp_path):
    ref = dataset_dir(tmp_path, ["a", "b", "c"])
    with pytest.raises(HeadMismatchError, match="'zebra' is not among the dataset's class names") as info:
        decide_head("x", head_rows=3, config=labelled(["a", "zebra", "c"]), dataset=ref)
    assert info.value.task == "x"
    assert "match them by position: --match-labels position (merge --evaluate, push;" in str(info.value)
    with pytest.raises(HeadMismatchError, match="repeat class names"):
        decide_head("x", head_rows=3, config=labelled(["a", "a", "b"]), dataset=dataset_dir(tmp_path, ["a", "b", "c"], "d2"))


def test_classes_matched_by_position_keep_the_models_labels_and_rows(tmp_path):
    """With match="position" (merge --evaluate --match-labels position) a local dataset's other names are
    no mismatch, as a Hub dataset's are not: the evaluation meets them by index; the head stays as trained."""
    ref = dataset_dir(tmp_path, ["zero", "one", "two"])
    renamed = decide_head("x", head_rows=3, config=labelled(["0", "1", "2"]), dataset=ref, match="position")
    assert renamed.labels == {0: "0", 1: "1", 2: "2"} and renamed.rows is None and not renamed.reinitialized
    assert renamed.label_source == "config"  # the note in the head's config: the labels are the model's own
    reordered = decide_head("x", head_rows=3, config=labelled(["two", "zero", "one"]), dataset=ref,
                            match="position")
    assert reordered.labels == {0: "two", 1: "zero", 2: "one"} and reordered.rows is None


def test_a_head_of_the_wrong_size_is_reinitialised_and_says_why(tmp_path):
    decision = decide_head("x", head_rows=1000, config=labelled([f"n{i}" for i in range(1000)]),
                           dataset=dataset_dir(tmp_path, ["a", "b"]))
    assert decision.reinitialized and "1000 outputs" in decision.reason and "2 classes" in decision.reason
    assert decision.labels == {0: "a", 1: "b"} and decision.report()["reinitialized"] is True
    headless = decide_head("eurosat", head_rows=0, config=None, dataset=None)
    assert headless.reinitialized and "no head" in headless.reason and len(headless.labels) == 10
    with pytest.raises(HeadMismatchError, match="no classification head"):
        decide_head("my-task", head_rows=0, config=None, dataset=None)


def test_a_fine_tuned_head_lost_to_a_registry_task_name_says_to_rename_the_task():
    """A 5-digit fine-tune named task 'mnist' (10 classes in the registry) had its head re-initialised, with no
    word of why its own classes were not taken or how to keep them."""
    own = labelled(["0", "1", "2", "3", "4"])
    renamed = "name the task otherwise than 'mnist' to keep its head"
    lost = decide_head("mnist", head_rows=5, config=own, dataset=None)
    assert lost.reinitialized and "its own 5 classes (0, 1, 2, ...)" in lost.reason and renamed in lost.reason
    assert "name the task" not in decide_head("mnist", head_rows=5, config=None, dataset=None).reason  # no own
    by_dataset = decide_head("mine", head_rows=5, config=own, dataset=DatasetRef("tanganke/eurosat"))
    assert by_dataset.reinitialized and "name the task" not in by_dataset.reason  # the dataset's id said 10


def test_registry_labels_and_the_models_own():
    eurosat = decide_head("eurosat", head_rows=10, config=None, dataset=None)
    assert eurosat.label_source == "registry" and list(eurosat.labels.values()) == list(classnames.class_names("eurosat"))
    placeholders = decide_head("eurosat", head_rows=10, config=labelled([f"LABEL_{i}" for i in range(10)]), dataset=None)
    assert placeholders.labels == eurosat.labels  # placeholders get the registry's names
    own = [f"class {i}" for i in range(10)]
    trusted = decide_head("eurosat", head_rows=10, config=labelled(own), dataset=None)
    assert trusted.label_source == "config" and list(trusted.labels.values()) == own  # a guess never overrides the model
    assert trusted.rows is None and not trusted.reinitialized
    assert decide_head("eurosat", head_rows=4, config=None, dataset=None).reinitialized


def test_an_unknown_task_without_labels_keeps_its_config_labels():
    decision = decide_head("my-task", head_rows=3, config=labelled(["a", "b", "c"]), dataset=None)
    assert decision.label_source == "config" and decision.labels == {0: "a", 1: "b", 2: "c"}
    generic = decide_head("my-task", head_rows=2, config=None, dataset=None)
    assert generic.labels == {0: "LABEL_0", 1: "LABEL_1"} and not generic.reinitialized


def test_head_seeds_are_stable_and_per_task():
    assert head_seed("mnist") == head_seed("mnist") != head_seed("svhn")
    assert 0 <= head_seed("mnist") < 2**63


# ----------------------------------------------------------------------------- what the output records


def test_id2label_config_carries_the_labels_and_the_note():
    decision = HeadDecision("t", {0: "a", 1: "b"}, "registry", reinitialized=True, reason="too small")
    config = id2label_config({"model_type": "convnext", "id2label": {"0": "x"}, "num_labels": 1}, decision)
    assert config["id2label"] == {"0": "a", "1": "b"} and config["label2id"] == {"a": 0, "b": 1}
    assert "num_labels" not in config and config["model_type"] == "convnext"
    assert config["hubmerge_head"] == {"reinitialized": True, "reason": "too small", "label_source": "registry",
                                       "reordered": False}
    assert id2label_config({"num_classes": 7}, decision)["num_classes"] == 2


def test_heads_index_layout():
    convnext = family_by_name("convnext")
    decision = HeadDecision("t", {0: "a", 1: "b"}, "dataset", rows=(1, 0))
    index = heads_index(
        [TaskHead("t", "org/m@abc", ("classifier.weight", "classifier.bias"), ("heads/t/model.safetensors",), decision)],
        family=convnext, target_modules=["convnext"], default_task="t", processor={"kind": "none"},
    )
    assert index["format"] == HEADS_INDEX_FORMAT and index["family"] == "convnext" and index["library"] == "transformers"
    assert index["default_task"] == "t" and index["target_modules"] == ["convnext"]
    assert index["hubmerge_version"] == hubmerge.__version__  # what made the output
    entry = index["tasks"]["t"]
    assert entry["num_classes"] == 2 and entry["reordered"] is True and entry["label_source"] == "dataset"
    assert entry["head_tensors"] == ["classifier.weight", "classifier.bias"] and entry["model"] == "org/m@abc"
