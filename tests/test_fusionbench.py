"""FusionBench-style configs converted to Recipes (hubmerge.fusionbench), in the shapes FusionBench ships."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from hubmerge.errors import RecipeError, UnknownTaskError
from hubmerge.presets import load_preset
from hubmerge.recipe import Recipe, load_recipe

# The files FusionBench composes for its 8-task ConvNeXt example (fusion_bench_config/, snapshot 54c9e8c):
# method/<name>.yaml, modelpool/ConvNextForImageClassification/convnext-base-224_8-tasks.yaml, and
# taskpool/ImageClassificationTaskPool/convnext-base-224_8-tasks.yaml with its dataset/image_classification/test/*.
METHODS = {
    "simple_average": "_target_: fusion_bench.method.SimpleAverageAlgorithm\n",
    "task_arithmetic": "_target_: fusion_bench.method.TaskArithmeticAlgorithm\nscaling_factor: 0.3\n",
    "ties_merging": """\
_target_: fusion_bench.method.TiesMergingAlgorithm
# Scaling factor $\\lambda$
scaling_factor: 0.3
threshold: 20
# List of keys to remove from the state dict, default is empty
remove_keys: []
# Function to merge the models, default is sum. Options are 'sum', 'mean', and 'max'
merge_func: sum
""",
    "linear/weighted_average": """\
_target_: fusion_bench.method.WeightedAverageAlgorithm
normalize: true # if true, the weights will be normalized before merging
weights: # List of weights for each model
  - 0.5
  - 0.5
""",
}
MODELPOOL = """\
_target_: fusion_bench.modelpool.ConvNextForImageClassificationPool
_recursive_: False
models:
  _pretrained_: facebook/convnext-base-224
  sun397: tanganke/convnext-base-224_sun397_sgd_batch-size-64_lr-0.01_steps-4000
  stanford-cars: tanganke/convnext-base-224_stanford-cars_sgd_batch-size-64_lr-0.01_steps-4000
  resisc45: tanganke/convnext-base-224_resisc45_sgd_batch-size-64_lr-0.01_steps-4000
  eurosat: tanganke/convnext-base-224_eurosat_sgd_batch-size-64_lr-0.01_steps-4000
  svhn: tanganke/convnext-base-224_svhn_sgd_batch-size-64_lr-0.01_steps-4000
  gtsrb: tanganke/convnext-base-224_gtsrb_sgd_batch-size-64_lr-0.01_steps-4000
  mnist: tanganke/convnext-base-224_mnist_sgd_batch-size-64_lr-0.01_steps-4000
  dtd: tanganke/convnext-base-224_dtd_sgd_batch-size-64_lr-0.01_steps-4000
train_datasets: null
val_datasets: null
test_datasets: null
"""
TASKPOOL = """\
defaults:
  - /dataset/image_classification/test@test_datasets:
      - sun397
      - stanford-cars
      - resisc45
      - eurosat
      - svhn
      - gtsrb
      - mnist
      - dtd
  - _self_
_target_: fusion_bench.taskpool.image_classification.ImageClassificationTaskPool
_recursive_: False
processor: facebook/convnext-base-224
dataloader_kwargs:
  batch_size: 32
  num_workers: 0
"""
TEST_DATASETS = """\
sun397: {_target_: datasets.load_dataset, path: tanganke/sun397, split: test}
stanford-cars: {_target_: datasets.load_dataset, path: tanganke/stanford_cars, split: test}
resisc45: {_target_: datasets.load_dataset, path: tanganke/resisc45, split: test}
eurosat: {_target_: datasets.load_dataset, path: tanganke/eurosat, split: test}
svhn:
  _target_: datasets.load_dataset
  _args_:
    - ufldl-stanford/svhn
    - cropped_digits
  split: test
gtsrb: {_target_: datasets.load_dataset, path: tanganke/gtsrb, split: test}
mnist: {_target_: datasets.load_dataset, path: ylecun/mnist, split: test}
dtd: {_target_: datasets.load_dataset, path: tanganke/dtd, split: test}
"""


def composed(method: str, *, resolved_taskpool: bool = True) -> str:
    """One YAML holding method, modelpool and taskpool, as `fusion_bench --cfg job` prints it."""
    taskpool = yaml.safe_load(TASKPOOL)
    if resolved_taskpool:  # Hydra resolved the defaults into test_datasets
        del taskpool["defaults"]
        taskpool["test_datasets"] = yaml.safe_load(TEST_DATASETS)
    return yaml.safe_dump({
        "_target_": "fusion_bench.programs.FabricModelFusionProgram", "_recursive_": False, "seed": None,
        "fast_dev_run": False, "merged_model_save_path": None, "report_save_path": "{log_dir}/program_report.json",
        "method": yaml.safe_load(METHODS[method]), "modelpool": yaml.safe_load(MODELPOOL), "taskpool": taskpool,
    }, sort_keys=False)


@pytest.mark.parametrize("resolved", [True, False], ids=["test_datasets", "defaults"])
def test_the_fusionbench_8_task_example_is_the_preset(resolved):
    recipe = Recipe.from_yaml(composed("simple_average", resolved_taskpool=resolved))
    assert replace(recipe, name="convnext-base-224-8tasks") == load_preset("convnext-base-224-8tasks")


def test_task_arithmetic_and_ties_with_fusionbench_defaults():
    task_arithmetic = Recipe.from_yaml(composed("task_arithmetic"))
    assert task_arithmetic.method == "task_arithmetic" and task_arithmetic.parameters == {"scaling_factor": 0.3}
    ties = Recipe.from_yaml(composed("ties_merging"))
    assert ties.method == "ties"
    assert ties.parameters == {"density": 0.2, "scaling_factor": 0.3, "disjoint_merge": "sum"}
    assert str(ties.base_model) == "facebook/convnext-base-224" and ties.target_modules == ("convnext",)
    svhn = ties.models[4].dataset
    assert (svhn.path, svhn.name, svhn.split) == ("ufldl-stanford/svhn", "cropped_digits", "test")


def test_a_fusionbench_file_is_read_by_load_recipe(tmp_path):
    path = tmp_path / "fusion.yaml"
    path.write_text(composed("ties_merging"))
    assert load_recipe(path).tasks[:2] == ["sun397", "stanford-cars"]


def test_plan_and_merge_take_a_fusionbench_configs_dict_as_they_take_its_file(tmp_path):
    """The dict a FusionBench file holds went to Recipe.from_dict, which called its 'modelpool' unknown."""
    from hubmerge.engine.planning import as_recipe

    path = tmp_path / "fusion.yaml"
    path.write_text(composed("ties_merging"))
    assert as_recipe(yaml.safe_load(path.read_text())) == load_recipe(path)


_DARE = {"drop_rate": 0.5, "rescale": True, "seed": 0, "combine": "linear", "disjoint_merge": "sum", "scaling_factor": 0.3}


@pytest.mark.parametrize(
    "method, expected",
    [
        ("{_target_: fusion_bench.method.SimpleAverageAlgorithm}", ("simple_average", {})),
        ("simple_average", ("simple_average", {})),
        ("{_target_: fusion_bench.method.TaskArithmeticAlgorithm, scaling_factor: 0.5}", ("task_arithmetic", {"scaling_factor": 0.5})),
        ("task_arithmetic", ("task_arithmetic", {"scaling_factor": 0.3})),
        ("ties_merging", ("ties", {"density": 0.2, "disjoint_merge": "sum", "scaling_factor": 0.3})),
        ("{name: ties_merging, threshold: 0.1, merge_func: mean}", ("ties", {"density": 0.1, "disjoint_merge": "mean", "scaling_factor": 0.3})),
        ("{name: ties_merging, threshold: 50}", ("ties", {"density": 0.5, "disjoint_merge": "sum", "scaling_factor": 0.3})),
        ("{name: ties_merging, threshold: 100}", ("ties", {"density": 1.0, "disjoint_merge": "sum", "scaling_factor": 0.3})),
        ("{name: ties_merging, threshold: 1}", ("ties", {"density": 1.0, "disjoint_merge": "sum", "scaling_factor": 0.3})),
        ("{_target_: fusion_bench.method.SimpleAverageAlgorithm, show_pbar: true, inplace: false}", ("simple_average", {})),
        # DARE: it was read as task arithmetic ('dare/task_arithmetic') or refused (the class names)
        ("dare/task_arithmetic", ("dare", _DARE)),
        (("{_target_: fusion_bench.method.DareTaskArithmetic, scaling_factor: 0.4, sparsity_ratio: 0.7, "
          "only_on_linear_weights: false, rescale: false}"),
         ("dare", {**_DARE, "scaling_factor": 0.4, "drop_rate": 0.7, "rescale": False})),
        ("{_target_: fusion_bench.method.DareSimpleAverage, sparsity_ratio: 0.5, only_on_linear_weights: false}",
         ("dare", {**_DARE, "scaling_factor": 0.5})),  # 1 / (2 models)
        (("{_target_: fusion_bench.method.dare.DareTiesMerging, sparsity_ratio: 0.6, only_on_linear_weights: false, "
          "rescale: true, scaling_factor: 0.5, threshold: 100, remove_keys: [], merge_func: mean}"),
         ("dare", {**_DARE, "drop_rate": 0.6, "scaling_factor": 0.5, "combine": "ties", "disjoint_merge": "mean"})),
        ("{name: linear/weighted_average, normalize: true, weights: [1, 3]}", ("weighted_average", {"normalize": True})),
    ],
)
def test_method_names_and_parameters(method, expected):
    text = f"method: {method}\nmodelpool:\n  models:\n    _pretrained_: {{config_path: a/base, pretrained: true}}\n    t1: a/one\n    t2: a/two\n"
    recipe = Recipe.from_yaml(text)
    assert (recipe.method, dict(recipe.parameters)) == expected
    assert str(recipe.base_model) == "a/base"


def test_weighted_average_weights_follow_the_modelpool_order():
    text = """
method: {_target_: fusion_bench.method.WeightedAverageAlgorithm, normalize: false, weights: [0.25, 0.75]}
modelpool: {models: {eurosat: a/e, mnist: {pretrained_model_name_or_path: a/m, dataset_name: mnist}}}
"""
    recipe = Recipe.from_yaml(text)
    assert recipe.method == "weighted_average" and recipe.parameters == {"normalize": False}
    assert [(m.task, m.weight) for m in recipe.models] == [("eurosat", 0.25), ("mnist", 0.75)]
    assert recipe.models[0].dataset is None and recipe.models[1].dataset.path == "ylecun/mnist"  # from dataset_name


def test_a_named_taskpool_gets_the_registry_datasets():
    text = """
method: simple_average
modelpool: {models: {eurosat: a/e, svhn: a/s}}
taskpool:
  defaults:
    - /dataset/image_classification/test@test_datasets: [eurosat, svhn, mnist]
"""
    recipe = Recipe.from_yaml(text)
    assert [str(m.dataset) for m in recipe.models] == ["tanganke/eurosat:test", "ufldl-stanford/svhn:cropped_digits:test"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("modelpool: {models: {eurosat: a/e}}\ntaskpool:\n  defaults:\n    - /dataset/image_classification/test@test_datasets: [eurosat, imagenet-z]",
         "unknown task 'imagenet-z'. Known tasks: cifar10"),
        ("method: simple_average\nmodelpool: {models: {x: {config_path: a/x, dataset_name: caltech1000}}}",
         "unknown task 'caltech1000'. Known tasks: cifar10"),
    ],
)
def test_unknown_dataset_names_list_the_known_ones(text, message):
    if not text.startswith("method"):
        text = "method: simple_average\n" + text
    with pytest.raises(UnknownTaskError) as info:
        Recipe.from_yaml(text)
    assert message in str(info.value) and "eurosat" in str(info.value) and "svhn" in info.value.known


@pytest.mark.parametrize(
    "text, message",
    [
        ("method: {_target_: fusion_bench.method.AdaMergingAlgorithm}\nmodelpool: {models: {a: b/c}}", "no hubmerge equivalent"),
        ("method: {_target_: fusion_bench.method.dare.DareTiesMerging}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "trims each dropped task vector to its top 20% by magnitude before the sign election; .* threshold: 100"),
        ("method: slerp/slerp\nmodelpool: {models: {a: b/c, d: e/f}}",
         "hubmerge's slerp is not the same merge: .*DOT_THRESHOLD .*`hubmerge methods slerp` prints one"),
        ("method: {_target_: fusion_bench.method.model_stock.ModelStock}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "hubmerge's model_stock is not the same merge: .*mean pairwise angle"),
        ("method: singular_value_calibration/task_arithmetic\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "no hubmerge equivalent"),  # it was read as plain task_arithmetic
        ("method: {name: dare/task_arithmetic, only_on_linear_weights: true}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "only_on_linear_weights: true drops entries of nn.Linear weights only"),
        ("method: {name: ties_merging, merge_func: max}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "merge_func 'max'"),
        ("method: {name: ties_merging, remove_keys: [x]}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "remove_keys"),
        ("method: {name: ties_merging, threshold: 120}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "threshold"),
        ("method: {name: ties_merging, threshold: -1}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}", "threshold"),
        ("method: {name: task_arithmetic, scaling_factor: 0.3, lambda: 2}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "parameter 'lambda'"),
        ("method: {name: simple_average, weights: [1, 1]}\nmodelpool: {models: {a: b/c, d: e/f}}", "parameter 'weights'"),
        ("method: {name: simple_average}\nmodelpool: {models: {}}", "modelpool.models"),
        ("method: {name: simple_average}\ntaskpool: {}", "modelpool"),
        ("method: {name: weighted_average, weights: [1]}\nmodelpool: {models: {a: b/c, d: e/f}}", "one number per task"),
        ("method: simple_average\nmodelpool: {models: {_pretrained_: {config_path: x/y, pretrained: false}, a: b/c}}",
         "randomly initialised"),
        ("method: simple_average\nmodelpool: {type: torchvision, models: {a: {model_name: resnet18, weights: DEFAULT}}}",
         "hubmerge export-resnet ARCH DIR --checkpoint FILE"),
        ("method: simple_average\nmodelpool: {models: {a: {model_name: resnet18, weights: DEFAULT}}}",
         "hubmerge export-resnet ARCH DIR --checkpoint FILE"),
        ("method: simple_average\nmodelpool: {models: {a: {dataset_name: mnist}}}", "cannot tell which model"),
        # these were refused in hubmerge's words ('parameters.drop_rate' must be <= 0.999, 'models[1].weight')
        ("method: {name: dare/task_arithmetic, sparsity_ratio: 1.0}\nmodelpool: {models: {_pretrained_: x/y, a: b/c}}",
         "'method.sparsity_ratio': sparsity_ratio is the share of each task vector dropped, in \\[0, 1\\); got 1.0"),
        ("method: {name: weighted_average, weights: [1, heavy]}\nmodelpool: {models: {a: b/c, d: e/f}}",
         "'method.weights': 'weights' must list one number per task"),
        # a string `_args_` was read letter by letter: dataset path 'h', config 'u'
        ("method: simple_average\nmodelpool: {models: {a: b/c}}\ntaskpool: {test_datasets: {a: {_args_: hub/x}}}",
         "'_args_' must be a list like \\[org/name\\]"),
    ],
)
def test_configs_we_cannot_do_exactly_are_refused(text, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_yaml(text, source="fb.yaml")


def test_task_keys_yaml_reads_as_numbers_are_task_names():
    """`1:` and `2:` under modelpool.models were an unexpected KeyError('1')."""
    recipe = Recipe.from_yaml("method: simple_average\nmodelpool: {models: {1: b/c, 2: d/e}}")
    assert [(m.task, str(m.model)) for m in recipe.models] == [("1", "b/c"), ("2", "d/e")]


def test_a_taskpool_dataset_without_a_split_is_read_on_test():
    text = """
method: simple_average
modelpool: {models: {eurosat: a/e, svhn: a/s}}
taskpool:
  test_datasets:
    eurosat: {_target_: datasets.load_dataset, path: org/eurosat}
    svhn: {_target_: datasets.load_dataset, _args_: [org/svhn, cropped_digits]}
"""
    recipe = Recipe.from_yaml(text)
    assert [(m.dataset.path, m.dataset.name, m.dataset.split) for m in recipe.models] == [
        ("org/eurosat", None, "test"), ("org/svhn", "cropped_digits", "test")]


def test_dare_ties_without_a_scaling_factor_gets_fusionbenchs_0_5():
    """FusionBench's config/method/dare/ties_merging.yaml says 0.5, not hubmerge's dare default (0.3)."""
    text = ("method: {name: dare/ties_merging, threshold: 100}\n"
            "modelpool: {models: {_pretrained_: a/base, t1: a/one, t2: a/two}}\n")
    recipe = Recipe.from_yaml(text)
    assert recipe.method == "dare" and recipe.parameters["combine"] == "ties"
    assert recipe.parameters["scaling_factor"] == 0.5


def test_the_taskpools_dataset_wins_over_the_modelpools_dataset_name():
    """dataset_name gives a task's dataset only when the taskpool names none for it."""
    text = """
method: simple_average
modelpool:
  models:
    mnist: {pretrained_model_name_or_path: a/m, dataset_name: mnist}
    svhn: {pretrained_model_name_or_path: a/s, dataset_name: svhn}
taskpool:
  test_datasets:
    mnist: {_target_: datasets.load_dataset, path: org/my-mnist, split: validation}
"""
    recipe = Recipe.from_yaml(text)
    assert [str(m.dataset) for m in recipe.models] == ["org/my-mnist:validation", "ufldl-stanford/svhn:cropped_digits:test"]
