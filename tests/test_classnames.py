"""hubmerge.vision.classnames: the class-name registry."""

from __future__ import annotations

import pytest

from hubmerge.errors import RecipeError, UnknownTaskError
from hubmerge.vision.classnames import (
    FUSIONBENCH_DATASETS,
    FUSIONBENCH_TASKS,
    TASK_DATASETS,
    DatasetSpec,
    canonical_task,
    class_names,
    dataset_for,
    id2label,
    known_tasks,
    label2id,
    num_classes,
    register_task,
)

SIZES = {
    "sun397": 397,
    "stanford-cars": 196,
    "resisc45": 45,
    "eurosat": 10,
    "svhn": 10,
    "gtsrb": 43,
    "mnist": 10,
    "dtd": 47,
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "oxford_flowers102": 102,
    "oxford-iiit-pet": 37,
    "food101": 101,
    "fashion_mnist": 10,
    "kmnist": 10,
    "emnist_letters": 26,
    "digits": 10,
    "digits_low": 5,
    "digits_high": 5,
    "digits_parity": 2,
    "digits_rotated": 10,
}


@pytest.mark.parametrize(("task", "size"), sorted(SIZES.items()))
def test_sizes_and_uniqueness(task: str, size: int) -> None:
    names = class_names(task)
    assert len(names) == size == num_classes(task)
    assert len(set(names)) == size, "class names must be unique"
    assert all(isinstance(n, str) and n for n in names)
    assert task in known_tasks()


def test_fusionbench_tasks_and_head_sizes() -> None:
    # DESIGN.md: head sizes 397, 196, 45, 10, 10, 43, 10, 47, in FusionBench's task order.
    assert FUSIONBENCH_TASKS == (
        "sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd",
    )
    assert [num_classes(t) for t in FUSIONBENCH_TASKS] == [397, 196, 45, 10, 10, 43, 10, 47]
    assert list(FUSIONBENCH_DATASETS) == list(FUSIONBENCH_TASKS)
    assert known_tasks()[:8] == list(FUSIONBENCH_TASKS)


def test_label_order_spot_checks() -> None:
    # First/last classes and a few in the middle pin the dataset order, not just the count.
    assert class_names("sun397")[:2] == ["abbey", "airplane cabin"]
    assert class_names("sun397")[-1] == "youth hostel"
    cars = class_names("stanford-cars")
    assert cars[0] == "AM General Hummer SUV 2000" and cars[-1] == "smart fortwo Convertible 2012"
    assert class_names("resisc45")[0] == "airplane" and class_names("resisc45")[-1] == "wetland"
    assert class_names("eurosat")[0] == "annual crop land" and class_names("eurosat")[9] == "lake or sea"
    assert class_names("svhn") == class_names("mnist") == [str(i) for i in range(10)]
    assert class_names("gtsrb")[14] == "stop"
    assert class_names("dtd")[0] == "banded" and class_names("dtd")[-1] == "zigzagged"
    assert class_names("cifar10") == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]
    assert class_names("stl10")[:3] == ["airplane", "bird", "car"]
    pets = class_names("oxford-iiit-pet")
    assert pets[0] == "abyssinian" and pets[-1] == "yorkshire_terrier"
    assert class_names("food101")[0] == "apple pie" and class_names("food101")[-1] == "waffles"
    assert class_names("oxford_flowers102")[0] == "pink primrose"
    assert class_names("fashion_mnist")[9] == "Ankle boot"
    assert class_names("emnist_letters")[0] == "A" and class_names("emnist_letters")[-1] == "Z"
    assert class_names("cifar100")[0] == "apple" and class_names("cifar100")[-1] == "worm"


def test_fixture_tasks() -> None:
    assert class_names("digits") == [str(i) for i in range(10)]
    assert class_names("digits_low") == ["0", "1", "2", "3", "4"]
    assert class_names("digits_high") == ["5", "6", "7", "8", "9"]
    assert class_names("digits_parity") == ["even", "odd"]


@pytest.mark.parametrize(
    ("alias", "task"),
    [
        ("stanford_cars", "stanford-cars"),
        ("Stanford-Cars", "stanford-cars"),
        ("STANFORD CARS", "stanford-cars"),
        ("tanganke/stanford_cars", "stanford-cars"),
        ("cars", "stanford-cars"),
        ("oxford_pets", "oxford-iiit-pet"),
        ("oxford-iiit-pet", "oxford-iiit-pet"),
        ("oxford_iiit_pet", "oxford-iiit-pet"),
        ("pets", "oxford-iiit-pet"),
        ("flowers102", "oxford_flowers102"),
        ("oxford-flowers102", "oxford_flowers102"),
        ("fashion-mnist", "fashion_mnist"),
        ("emnist-letters", "emnist_letters"),
        ("ufldl-stanford/svhn", "svhn"),
        ("ylecun/mnist", "mnist"),
        ("uoft-cs/cifar10", "cifar10"),
        ("CIFAR-100", "cifar100"),
        ("digits-low", "digits_low"),
        ("  EuroSAT ", "eurosat"),
        ("_mnist_", "mnist"),  # separators at the ends are no part of the name
    ],
)
def test_aliases(alias: str, task: str) -> None:
    assert canonical_task(alias) == task
    assert class_names(alias) == class_names(task)


def test_id2label_and_label2id() -> None:
    assert id2label("eurosat")[1] == "forest"
    assert id2label("digits_parity") == {0: "even", 1: "odd"}
    assert label2id("digits_parity") == {"even": 0, "odd": 1}
    mapping = id2label("gtsrb")
    assert list(mapping) == list(range(43))
    assert {v: k for k, v in mapping.items()} == label2id("gtsrb")


def test_results_are_copies() -> None:
    names = class_names("mnist")
    names.append("oops")
    assert len(class_names("mnist")) == 10


def test_unknown_task_error() -> None:
    with pytest.raises(UnknownTaskError) as info:
        class_names("stanfrd cars")
    error = info.value
    assert isinstance(error, RecipeError) and isinstance(error, ValueError)
    assert "stanfrd cars" in str(error)
    assert "sun397" in str(error) and "stanford-cars" in str(error)  # lists the known tasks
    assert "Did you mean 'stanford-cars'" in str(error)
    assert "register_task" in str(error)
    assert error.field == "task"
    assert "mnist" in error.known
    for blank in ("", "  "):  # says what a task name is, not "Did you mean" the closest of every name
        with pytest.raises(UnknownTaskError, match="A task name is a non-empty string"):
            id2label(blank)


def test_datasets() -> None:
    assert FUSIONBENCH_DATASETS["svhn"] == DatasetSpec("ufldl-stanford/svhn", "cropped_digits", "test")
    assert FUSIONBENCH_DATASETS["mnist"].repo_id == "ylecun/mnist"
    assert FUSIONBENCH_DATASETS["stanford-cars"].repo_id == "tanganke/stanford_cars"
    assert {spec.split for spec in FUSIONBENCH_DATASETS.values()} == {"test"}
    assert {(spec.image_column, spec.label_column) for spec in TASK_DATASETS.values()} == {("image", "label")}
    assert dataset_for("Stanford_Cars") is FUSIONBENCH_DATASETS["stanford-cars"]
    assert dataset_for("food101") == DatasetSpec("ethz/food101", split="validation")
    assert dataset_for("digits") is None
    for task in TASK_DATASETS:
        class_names(task)  # every dataset belongs to a known task


def test_register_task(registry_snapshot: None) -> None:
    assert register_task("shapes", ["circle", "square", "triangle"], aliases=["geometry"]) == "shapes"
    assert "shapes" in known_tasks()
    assert id2label("Shapes") == {0: "circle", 1: "square", 2: "triangle"}
    assert class_names("geometry") == ["circle", "square", "triangle"]
    # Registering the same names again is a no-op, under any spelling.
    assert register_task("SHAPES", ("circle", "square", "triangle")) == "shapes"
    with pytest.raises(RecipeError, match="replace=True"):
        register_task("shapes", ["circle", "square"])
    assert register_task("shapes", ["circle", "square"], replace=True) == "shapes"
    assert num_classes("shapes") == 2
    # An alias cannot steal another task's name.
    with pytest.raises(RecipeError, match="already names task 'mnist'"):
        register_task("my-digits", [str(i) for i in range(10)], aliases=["mnist"])
    assert "my-digits" not in known_tasks()


@pytest.mark.parametrize(
    "names",
    [[], ["a", "a"], ["a", ""], "abc", ["a", 3]],
    ids=["empty", "duplicate", "blank", "string", "non-string"],
)
def test_register_task_rejects_bad_names(registry_snapshot: None, names: object) -> None:
    with pytest.raises(RecipeError):
        register_task("bad", names)  # type: ignore[arg-type]
    assert "bad" not in known_tasks()


def test_builtin_task_needs_replace(registry_snapshot: None) -> None:
    with pytest.raises(RecipeError):
        register_task("mnist", ["zero", "one"])
    assert register_task("mnist", [str(i) for i in range(10)]) == "mnist"  # same names: fine
