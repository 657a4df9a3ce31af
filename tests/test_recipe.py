"""Recipe parsing and validation: every message names the field and says what to write."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from hubmerge.errors import MethodParameterError, RecipeError, UnknownMethodError
from hubmerge.recipe import DatasetRef, ModelRef, Recipe, load_recipe, shared_names, task_name_problem

GOOD = """
method: task_arithmetic
parameters: {scaling_factor: 0.5}
base_model: facebook/convnext-base-224
models:
  - model: tanganke/convnext-base-224_eurosat_sgd_batch-size-64_lr-0.01_steps-4000@main
    task: eurosat
    dataset: tanganke/eurosat
  - model: org/mnist-model
    task: mnist
    dataset: {path: ylecun/mnist, split: validation}
target_modules: [convnext]
dtype: bfloat16
default_task: mnist
"""


def test_good_recipe_round_trips():
    recipe = Recipe.from_yaml(GOOD)
    assert recipe.method == "task_arithmetic"
    assert recipe.parameters["scaling_factor"] == 0.5
    assert recipe.base_model == ModelRef(repo_id="facebook/convnext-base-224")
    first = recipe.models[0]
    assert first.model.repo_id.endswith("steps-4000") and first.model.revision == "main"
    assert first.dataset == DatasetRef("tanganke/eurosat", None, "test")
    assert recipe.models[1].dataset.split == "validation"
    assert recipe.tasks == ["eurosat", "mnist"] and recipe.resolved_default_task == "mnist"
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe


def test_a_device_other_than_auto_is_kept_in_the_yaml():
    """The output's pinned recipe (to_yaml) reproduces the merge on the device it named."""
    recipe = Recipe.from_yaml("method: simple_average\nmodels: [a/b]\ndevice: cuda:1")
    assert recipe.to_dict()["device"] == "cuda:1" and Recipe.from_yaml(recipe.to_yaml()).device == "cuda:1"
    assert "device" not in Recipe.from_yaml("method: simple_average\nmodels: [a/b]").to_dict()


def test_defaults_are_filled_in():
    recipe = Recipe.from_yaml("method: ties\nbase_model: a/b\nmodels: [c/d, e/f]")
    assert recipe.parameters["density"] == 0.2 and recipe.parameters["scaling_factor"] == 0.3
    assert recipe.resolved_default_task is None and recipe.device == "auto"


def test_inputs_are_counted_as_fine_tunes_and_their_base():
    def recipe(count: int, base: bool) -> Recipe:
        return Recipe.from_dict({"method": "task_arithmetic" if base else "simple_average",
                                 **({"base_model": "org/base"} if base else {}),
                                 "models": [{"model": f"org/m{i}", "task": f"t{i}"} for i in range(count)]})

    assert recipe(3, True).inputs_in_words == "3 fine-tuned models and their base"
    assert recipe(1, True).inputs_in_words == "1 fine-tuned model and its base"
    assert recipe(2, False).inputs_in_words == "2 models"


def test_local_paths_resolve_against_the_recipe_file(tmp_path):
    (tmp_path / "models" / "ft").mkdir(parents=True)
    (tmp_path / "r.yaml").write_text("method: simple_average\nmodels:\n  - model: ./models/ft\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.models[0].model.path == tmp_path / "models" / "ft"


def test_pinning_revisions():
    recipe = Recipe.from_yaml(GOOD)
    sha = "a" * 40
    pinned = recipe.with_revisions({m.model: sha for m in recipe.models} | {recipe.base_model: sha})
    assert all(m.model.revision == sha for m in pinned.models)
    assert str(pinned.base_model) == f"facebook/convnext-base-224@{sha}"


def test_the_pinned_recipe_names_local_folders_from_anywhere(tmp_path, monkeypatch):
    """A recipe from Python with relative paths (no file to resolve them from) was written into the output as
    it was given: read back from the output's folder, 'ft/a' was a Hub repo and './data' another folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ft" / "a").mkdir(parents=True)
    recipe = Recipe.from_dict({"method": "task_arithmetic", "base_model": "./ft/base",
                               "models": [{"model": "./ft/a", "task": "a", "dataset": "./data"}, "org/b"]})
    pinned = recipe.with_revisions({ModelRef.parse("org/b"): "b" * 40})
    back = Recipe.from_yaml(pinned.to_yaml(), base_dir=tmp_path / "out")  # as read_output_recipe reads it
    assert back.base_model == ModelRef(path=tmp_path / "ft" / "base")
    assert back.models[0].model == ModelRef(path=tmp_path / "ft" / "a")
    assert back.models[0].dataset == DatasetRef(str(tmp_path / "data"))
    assert str(back.models[1].model) == f"org/b@{'b' * 40}"


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("method: [unclosed", RecipeError, "line 1"),
        ("", RecipeError, "empty"),
        ("- a\n- b", RecipeError, "mapping"),
        ("method: simple_average\nmodel: [a/b]", RecipeError, "Did you mean 'models'"),
        ("method: avg\nmodels: [a/b]", UnknownMethodError, "simple_average"),
        ("method: ties\nbase_model: a/b\nmodels: [a/c]\nparameters: {density: 2}", MethodParameterError, "density"),
        ("method: ties\nbase_model: a/b\nmodels: [a/c]\nparameters: {densty: 0.1}", MethodParameterError, "densty"),
        ("method: ties\nbase_model: a/b\nmodels: [a/c]\nparameters: {density: high}", MethodParameterError, "number"),
        ("method: task_arithmetic\nmodels: [a/c]", RecipeError, "base_model"),
        ("method: simple_average\nmodels: []", RecipeError, "at least one"),
        ("method: simple_average\nmodels: a/b", RecipeError, "list"),
        ("method: simple_average\nmodels: [{task: x}]", RecipeError, "models\\[0\\]"),
        ("method: simple_average\nmodels: [{model: a/b, tsk: x}]", RecipeError, "Did you mean 'task'"),
        # a task names its head's folder: refused with the recipe, not once the plan has asked the Hub
        ("method: simple_average\nmodels: [{model: a/b, task: ../../x}]", RecipeError, "heads/<task>/"),
        ("method: simple_average\nmodels: [{model: a/b, task: a/b}]", RecipeError, "models\\[0\\].task"),
        ("method: simple_average\nmodels: [{model: a/b, task: 'trailing '}]", RecipeError, "inner spaces"),
        ("method: simple_average\nmodels: [{model: a/b, task: .hidden}]", RecipeError, "starting with a letter"),
        # eval_results.json's "average" is the mean: a task of that name lost its own accuracy to it
        ("method: simple_average\nmodels: [{model: a/b, task: average}]", RecipeError, "report's mean over the tasks"),
        ("method: simple_average\nmodels: ['not a repo!']", RecipeError, "valid repo id"),
        # the Hub refuses '--' in a repo id (and the cache's models--org--name folders rely on it)
        ("method: simple_average\nmodels: ['org/a--b']", RecipeError, "neither an existing directory nor a valid repo id"),
        ("method: simple_average\nmodels: ['a/b@']", RecipeError, "revision"),
        ("method: simple_average\nmodels: ['a/b@my branch']", RecipeError, "the revision after '@' is empty or has spaces"),
        ("method: simple_average\nmodels: [{model: a/b, task: x}, {model: a/c, task: x}]", RecipeError, "more than once"),
        ("method: simple_average\nmodels: [{model: a/b, task: Cars}, {model: a/c, task: cars}]", RecipeError,
         "tasks 'Cars', 'cars' differ only in case: their heads' folders"),  # one heads/cars/ on macOS
        ("method: simple_average\nmodels: [{model: a/b, task: x}]\ndefault_task: y", RecipeError, "default_task"),
        # PyYAML keeps the last of two equal keys: the second `models:` replaced the first without a word
        ("method: ties\nmodels: [a/b]\nmodels: [a/c]", RecipeError, "line 3, column 1: key 'models' appears twice"),
        ("method: ties\nmodels: [{model: a/b, task: x, task: y}]", RecipeError, "key 'task' appears twice"),
        ("method: weighted_average\nmodels: [{model: a/b, weight: 1}, {model: a/c}]", RecipeError, "every model"),
        ("method: simple_average\nmodels: [{model: a/b, weight: heavy}]", RecipeError, "weight must be a number"),
        # YAML's true is an int to Python: it was merged as a weight of 1
        ("method: weighted_average\nmodels: [{model: a/b, weight: true}, {model: a/c, weight: 1}]", RecipeError,
         "weight must be a number, got True"),
        ("method: weighted_average\nmodels: [{model: a/b, weight: .nan}, {model: a/c, weight: 1}]", RecipeError,
         "weights must be finite numbers"),
        ("method: weighted_average\nmodels: [a/b, a/c]", RecipeError, "weight"),
        ("method: weighted_average\nmodels: [{model: a/b, weight: -1}, {model: a/c, weight: 1}]",
         MethodParameterError, "sum to 0"),  # refused with the recipe, not after planning
        ("method: simple_average\nmodels: [a/b]\ndtype: float8", RecipeError, "dtype"),
        ("method: simple_average\nmodels: [a/b]\ndevice: tpu", RecipeError, "device"),
        ("method: slerp\nmodels: [a/b, a/c, a/d]", RecipeError, "at most 2"),
        ("method: simple_average\nmodels: [a/b]\ntarget_modules: 3", RecipeError, "prefixes"),
        ("method: simple_average\nmodels: [a/b]\ntarget_modules: ['.']", RecipeError, "non-empty strings, got '.'"),
        # a number for default_task was an "unexpected error: TypeError('int' object is not iterable)"
        ("method: simple_average\nmodels: [{model: a/b, task: x}]\ndefault_task: 3", RecipeError,
         "default_task must be a name, got 3"),
        ("method: simple_average\nmodels: [a/b]\nname: [x]", RecipeError, "name must be a name"),
        # NaN passed every range check, then every merged tensor was NaN and the merge blamed the model
        ("method: task_arithmetic\nbase_model: a/b\nmodels: [a/c]\nparameters: {scaling_factor: .nan}",
         MethodParameterError, "must be a finite number, got nan"),
        ("method: ties\nbase_model: a/b\nmodels: [a/c]\nparameters: {scaling_factor: -.inf}",
         MethodParameterError, "must be a finite number, got -inf"),
        # simple_average merged the plain mean while the card's recipe listed the weights
        ("method: simple_average\nmodels: [{model: a/b, weight: 2}, {model: a/c, weight: 0.5}]", RecipeError,
         ("simple_average uses no per-model weights, so each 'weight' would be ignored; remove them, or choose a "
          "method that weighs the models \\(weighted_average, task_arithmetic")),
        ("method: slerp\nmodels: [{model: a/b, weight: 2}, {model: a/c, weight: 0.5}]", RecipeError,
         "slerp uses no per-model weights"),
        # one weight given: "give a 'weight' to every model" sent the user to add weights the method ignores
        ("method: model_stock\nbase_model: a/b\nmodels: [a/c, {model: a/d, weight: 2}]", RecipeError,
         "model_stock uses no per-model weights, so each 'weight' would be ignored; remove them"),
    ],
)
def test_bad_recipes_say_what_to_fix(text, error, message):
    with pytest.raises(error, match=message):
        Recipe.from_yaml(text, source="r.yaml")


MERGEKIT_TIES = """\
models:
  - model: org/a
    parameters: {weight: 0.5, density: 0.5}
  - model: org/b
merge_method: ties
base_model: org/base
dtype: float16
tokenizer_source: base
"""


def test_a_mergekit_recipe_is_told_what_each_of_its_keys_is_here():
    """A mergekit config is refused with the translation of every key it names differently, not a bare list."""
    with pytest.raises(RecipeError) as top:
        Recipe.from_yaml(MERGEKIT_TIES)
    assert "unknown key 'merge_method'. mergekit's 'merge_method' is 'method' here." in str(top.value)
    assert "unknown key 'tokenizer_source'. mergekit's tokenizer settings have no use here" in str(top.value)
    with pytest.raises(RecipeError) as entry:
        Recipe.from_yaml(MERGEKIT_TIES.replace("merge_method", "method").replace("tokenizer_source: base\n", ""))
    assert entry.value.field == "models[0]"
    assert "mergekit's per-model 'parameters' are not read here: give the model's 'weight' on its entry" in str(
        entry.value
    )
    with pytest.raises(UnknownMethodError, match="mergekit's 'dare_ties' is 'dare' with 'combine: ties' here"):
        Recipe.from_yaml("method: dare_ties\nbase_model: org/base\nmodels: [org/a]")


@pytest.mark.parametrize(
    "key, translation",
    [
        ("base", "The base model goes under 'base_model'."),
        ("_pretrained_", "FusionBench's '_pretrained_' is 'base_model' here."),
        ("out_dtype", "mergekit's 'out_dtype' is 'dtype' here."),
        ("slices", "mergekit's 'slices' (layer ranges) have no equivalent here"),
        ("weights", "Weights are per model: give each entry under 'models' a 'weight'."),
        ("tasks", "Tasks are per model: give each entry under 'models' a 'task'."),
    ],
)
def test_keys_other_tools_use_are_translated(key, translation):
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(f"method: simple_average\nmodels: [org/a]\n{key}: x")
    assert f"unknown key '{key}'. {translation}" in str(info.value)
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize("name", ["sun397", "stanford-cars", "digits_low", "Stanford Cars", "oxford.pets", "x" * 96])
def test_task_names_that_can_name_a_folder(name):
    assert task_name_problem(name) is None


@pytest.mark.parametrize("name", ["../root", "a/b", "a\\b", "..", "a..b", "_hidden", " x", "x ", "x\n", "", "x" * 97])
def test_task_names_that_cannot(name):
    assert "cannot name the folder heads/<task>/" in task_name_problem(name)


def test_the_reports_average_is_no_task_name():
    from hubmerge.evaluation.report import AVERAGE

    assert "the evaluation report's mean" in task_name_problem(AVERAGE)


@pytest.mark.parametrize("spelled", ["org/name", "org/name:validation", "ufldl-stanford/svhn:cropped_digits:test"])
def test_a_dataset_is_shown_as_it_is_written(spelled):
    """Hints propose `--task NAME=DATASET` with it: `svhn/cropped_digits:test` read back as another dataset."""
    ref = DatasetRef.parse(spelled)
    assert DatasetRef.parse(str(ref)) == ref


@pytest.mark.parametrize("spelled", ["org/name::test", "org/name:", ":test", "org/name:a:b:c", "org/name:cfg:"])
def test_a_dataset_spelled_wrong_is_refused_not_read_as_an_odd_split(spelled):
    with pytest.raises(RecipeError, match="write it 'org/name', 'org/name:split' or 'org/name:config:split'"):
        DatasetRef.parse(spelled)


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: simple_average\nmodels: []\n")
    with pytest.raises(RecipeError, match="bad.yaml"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("org/name", ModelRef(repo_id="org/name")),
        ("org/name@v1.0", ModelRef(repo_id="org/name", revision="v1.0")),
        ("gpt2", ModelRef(repo_id="gpt2")),
        ("./local", ModelRef(path=Path("local"))),
        ("/abs/dir", ModelRef(path=Path("/abs/dir"))),
        ("models\\ft", ModelRef(path=Path("models\\ft"))),  # a Windows path, even where it does not exist
    ],
)
def test_model_refs(text, expected):
    assert ModelRef.parse(text) == expected


def test_model_ref_str_round_trips():
    for text in ("org/name", "org/name@" + "b" * 40):
        assert str(ModelRef.parse(text)) == text


def test_local_dataset_paths_resolve_against_the_recipe_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "r.yaml").write_text("method: simple_average\nmodels:\n  - {model: ./m, task: t, dataset: ./data/t:validation}\n")
    dataset = load_recipe(tmp_path / "r.yaml").models[0].dataset
    assert dataset.path == str(tmp_path / "data" / "t") and dataset.split == "validation"
    hub = Recipe.from_yaml("method: simple_average\nmodels:\n  - {model: a/b, task: t, dataset: org/data}\n", base_dir=tmp_path)
    assert hub.models[0].dataset.path == "org/data"


def test_a_bare_dataset_folder_is_read_from_the_recipe_file_as_a_models_is(tmp_path, monkeypatch):
    """``dataset: my data/t`` (no ``./``), beside the recipe as ``model: my models/m`` may be: run from another
    folder, it was a Hub id to the evaluation, which failed once the merge was done ('Repo id must use ...')."""
    (tmp_path / "my models" / "m").mkdir(parents=True)
    (tmp_path / "my data" / "t").mkdir(parents=True)
    (tmp_path / "data" / "u").mkdir(parents=True)
    (tmp_path / "r.yaml").write_text("method: simple_average\nmodels:\n"
                                     "  - {model: my models/m, task: t, dataset: my data/t}\n"
                                     "  - {model: my models/m, task: u, dataset: data/u}\n"
                                     "  - {model: my models/m, task: v, dataset: my data/typo}\n"
                                     "  - {model: my models/m, task: w, dataset: org/data}\n")
    monkeypatch.chdir(tmp_path.parent)  # another folder
    t, u, v, w = (entry.dataset for entry in load_recipe(tmp_path / "r.yaml").models)
    assert (t.path, u.path) == (str(tmp_path / "my data" / "t"), str(tmp_path / "data" / "u"))
    assert v.path == str(tmp_path / "my data" / "typo") and v.is_local  # no Hub id: a missing folder, said so
    assert w.path == "org/data" and not w.is_local


def _laughs(levels: int, key: str = "a") -> str:
    """YAML aliases of aliases: a few hundred bytes that write out as 10**levels values."""
    lines = [f"{key}0: &{key}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{key}{i}: &{key}{i} [{', '.join([f'*{key}{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(30)
def test_yaml_that_expands_without_end_is_refused_at_once():
    """Nine levels of aliases in 600 bytes wrote out as 8 GB in an error message's repr ("billion laughs");
    a recursive alias or a deep nesting is no recipe either."""
    laughs = _laughs(7).replace("a6: &a6", "default_task: &a6")  # a field whose refusal shows its value
    expanded = "writes out to more than 1,000,000 values and characters once its aliases are expanded"
    with pytest.raises(RecipeError, match=expanded):
        Recipe.from_yaml("method: simple_average\nmodels: [org/a, org/b]\n" + laughs)
    with pytest.raises(RecipeError, match=expanded):
        Recipe.from_yaml("method: simple_average\nmodels: &m [org/a, *m]\n")
    long = "x" * 10_000  # fewer values, each a long string: 10 kB wrote an 800 MB message
    with pytest.raises(RecipeError, match=expanded):
        Recipe.from_yaml(f"method: simple_average\nmodels: [org/a, org/b]\ns0: &s0 [{long}, {long}]\n"
                         + _laughs(5, "b").replace("b0: &b0 [lol, lol", "b0: &b0 [*s0, *s0").replace("b4: &b4", "task: &b4"))
    keyed = _laughs(5, "c").replace("c0: &c0 [lol, lol", "c0: &c0 [{*s0 : 1}, {*s0 : 2}")
    keyed = keyed.replace("c4: &c4", "task: &c4")
    with pytest.raises(RecipeError, match=expanded):  # the long string as a mapping's key, not its value
        Recipe.from_yaml(f"method: simple_average\nmodels: [org/a, org/b]\ns0: &s0 {long}\n" + keyed)
    with pytest.raises(RecipeError, match="nests deeper than a recipe ever does"):
        Recipe.from_yaml("method: simple_average\nmodels: " + "[" * 5000 + "]" * 5000 + "\n")
    anchors = "method: simple_average\nshared: &m {model: org/a, task: a}\nmodels: [*m, {model: org/b, task: b}]\n"
    with pytest.raises(RecipeError, match="unknown key 'shared'"):  # aliases a recipe uses are read as ever
        Recipe.from_yaml(anchors)


def test_numbers_in_exponent_notation_are_numbers():
    """PyYAML follows YAML 1.1, which reads `3e-1` as text: `scaling_factor: 3e-1` was "must be a number,
    got '3e-1'" though the user wrote a number."""
    recipe = Recipe.from_yaml("method: weighted_average\nparameters: {normalize: false}\nmodels:\n"
                              "  - {model: a/b, weight: 5e-1}\n  - {model: a/c, weight: -1E+0}\n"
                              "  - {model: a/d, weight: 2.5e1}\n")
    assert [m.weight for m in recipe.models] == [0.5, -1.0, 25.0]
    assert Recipe.from_yaml("method: task_arithmetic\nbase_model: a/b\nmodels: [a/c]\n"
                            "parameters: {scaling_factor: 3e-1}").parameters["scaling_factor"] == 0.3
    recipe = Recipe.from_yaml("method: simple_average\nmodels: [{model: a/b@1e3, task: '1e3'}]")
    assert recipe.models[0].task == "1e3" and recipe.models[0].model.revision == "1e3"  # quoted or inside: text
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # PyYAML's own loader is left as it is


def test_yaml_merge_keys_still_override_as_yaml_says():
    """Repeated keys are refused, but `<<: *anchor` brings keys that the mapping's own may override."""
    recipe = Recipe.from_yaml("method: weighted_average\nmodels:\n  - &first {model: a/b, task: x, weight: 2}\n"
                              "  - {<<: *first, model: a/c, task: y}\n")
    assert [(str(m.model), m.task, m.weight) for m in recipe.models] == [("a/b", "x", 2.0), ("a/c", "y", 2.0)]


def test_a_repo_id_with_two_dots_in_a_row_is_refused():
    # the Hub refuses '..' in a repo id as it does '--'; the regex alone lets it through
    with pytest.raises(RecipeError, match="neither an existing directory nor a valid repo id"):
        ModelRef.parse("org/a..b")


def test_one_target_prefix_may_be_written_as_a_string():
    recipe = Recipe.from_yaml("method: simple_average\nmodels: [a/b]\ntarget_modules: convnext\n")
    assert recipe.target_modules == ("convnext",)


def test_a_recipe_loaded_by_a_relative_path_names_its_local_models_absolutely(tmp_path, monkeypatch):
    (tmp_path / "ft").mkdir()
    (tmp_path / "r.yaml").write_text("method: simple_average\nmodels:\n  - model: ./ft\n")
    monkeypatch.chdir(tmp_path)
    assert load_recipe("r.yaml").models[0].model.path == tmp_path / "ft"


def test_a_dataset_mapping_with_an_empty_split_is_evaluated_on_test():
    dataset = DatasetRef.parse({"path": "org/data", "name": "cfg", "split": None})
    assert dataset == DatasetRef("org/data", "cfg", "test")


def test_a_dataset_mapping_names_its_label_and_image_columns_and_keeps_them():
    """Columns the evaluation cannot find (CIFAR-100's coarse_label) are named in the dataset's mapping; they come
    back from the YAML, and the output's pinned recipe keeps them. A dataset that names none keeps its one line."""
    recipe = Recipe.from_yaml(
        "method: simple_average\nmodels:\n"
        "  - {model: org/a, task: a, dataset: {path: uoft-cs/cifar100, label_column: coarse_label}}\n"
        "  - {model: org/b, task: b, dataset: {path: org/d, name: cfg, split: val, image_column: img_path}}\n"
        "  - {model: org/c, task: c, dataset: org/e:validation}\n")
    a, b, c = (entry.dataset for entry in recipe.models)
    assert a == DatasetRef("uoft-cs/cifar100", None, "test", label_column="coarse_label")
    assert b == DatasetRef("org/d", "cfg", "val", image_column="img_path")
    assert [d.to_yaml() for d in (a, b, c)] == [
        {"path": "uoft-cs/cifar100", "split": "test", "label_column": "coarse_label"},
        {"path": "org/d", "name": "cfg", "split": "val", "image_column": "img_path"},
        "org/e:validation",
    ]
    pinned = recipe.with_revisions({ModelRef.parse("org/a"): "a" * 40})
    assert Recipe.from_yaml(pinned.to_yaml()).datasets == recipe.datasets
    assert str(a) == "uoft-cs/cifar100:test"  # the one line that reports, cards and --task spell
    assert a.recipe_line == "dataset: {path: uoft-cs/cifar100, split: test, label_column: coarse_label}"
    assert yaml.safe_load(a.recipe_line)["dataset"] == a.to_yaml()  # the hint's line is YAML that reads back


@pytest.mark.parametrize("ref", [
    DatasetRef("C:\\data\\eurosat"), DatasetRef("D:\\d", split="val"),  # the colon was read as a split's
    DatasetRef("org/d", label_column="label: fine"), DatasetRef("org/d", image_column="#img"),  # unquoted YAML
    DatasetRef("org/d", "cfg", "val", label_column="coarse_label"), DatasetRef("org/d", split="validation"),
])
def test_a_dataset_reads_back_as_the_recipe_and_its_hints_write_it(ref):
    """The output's pinned recipe and a hint's `dataset: ...` line read back as the same dataset: a Windows path
    came back as path 'C', a column named 'label: fine' or '#img' made the hint's line YAML that fails."""
    recipe = Recipe.from_dict({"method": "simple_average", "models": [{"model": "org/a", "task": "a",
                                                                      "dataset": ref.to_yaml()}]})
    assert Recipe.from_yaml(recipe.to_yaml()).datasets == {"a": ref}
    assert DatasetRef.parse(yaml.safe_load(ref.recipe_line)["dataset"]) == ref


@pytest.mark.parametrize("column", ["", "  ", 3, ["coarse_label"]])
def test_a_dataset_column_that_is_no_name_is_refused(column):
    with pytest.raises(RecipeError, match=r"models\[0\]\.dataset\.label_column.*a column's name"):
        Recipe.from_dict({"method": "simple_average", "models": [
            {"model": "org/a", "dataset": {"path": "org/d", "label_column": column}}]})
    with pytest.raises(RecipeError, match="optional 'name', 'split', 'label_column', 'image_column'"):
        DatasetRef.parse({"path": "org/d", "label": "coarse_label"})


def test_a_missing_split_hint_keeps_the_named_columns():
    ref = DatasetRef("org/d", split="train", label_column="coarse_label")
    assert ref.missing_split(["test"], task="t").endswith(
        "name the one to evaluate on: `dataset: {path: org/d, split: test, label_column: coarse_label}` in a recipe, "
        "`--task t=org/d:test` with its --label-column / --image-column for `hubmerge evaluate`")
    plain = DatasetRef("org/d", split="train")
    assert plain.missing_split(["test"]).endswith(
        "after a colon, e.g. `dataset: org/d:test` in a recipe, `--task NAME=org/d:test` for `hubmerge evaluate`")


@pytest.mark.parametrize("ref", [DatasetRef("C:\\data\\x", split="train"), DatasetRef("d:/x", "cfg", "train"),
                                 DatasetRef("/data/a:b", split="train")])
def test_a_missing_split_hint_on_a_windows_path_reads_back(ref):
    """The hint's one line for a drive's path parses back as that folder (it came back as path 'C'); a colon of a
    path's own, which no one line can say, gets the mapping."""
    said = ref.missing_split(["test"])
    line = re.search(r"`(dataset: [^`]+)`", said).group(1)
    assert DatasetRef.parse(yaml.safe_load(line)["dataset"]) == replace(ref, split="test")
    assert ("after a colon" in said) == (ref.path != "/data/a:b")
    task = re.search(r"`--task NAME=([^`]+)`", said)  # none for the path no one line can say
    assert (task is not None) == (ref.path != "/data/a:b")
    if task is not None:
        assert DatasetRef.parse(task.group(1)) == replace(ref, split="test")


def test_a_relative_local_path_is_written_so_that_it_reads_back_as_a_folder(tmp_path):
    """``Path("./merged")`` is ``merged``: written so, a recipe read it back as the Hub repo 'merged'."""
    ref = ModelRef(path=Path("./merged"))
    assert str(ref) == "./merged" and ModelRef.parse(str(ref)) == ref
    assert str(ModelRef(path=Path("../up"))) == "../up" and str(ModelRef(path=tmp_path)) == str(tmp_path)


def test_published_names_are_paths_below_the_inputs_common_parent(monkeypatch):
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/home/alice")))
    work = Path("/home/alice/work")
    assert shared_names([work / "ckpt" / "base", work / "ckpt" / "t1", work / "data" / "d1"]) == {
        work / "ckpt" / "base": "./ckpt/base", work / "ckpt" / "t1": "./ckpt/t1", work / "data" / "d1": "./data/d1"}
    assert shared_names([work / "t1"]) == {work / "t1": "./t1"}  # one folder: its name alone
    assert shared_names([work, work / "data"]) == {work: "./work", work / "data": "./work/data"}
    # from / or /home the names would start with this machine's layout or the user name: the fewest last
    # components that tell the folders apart
    assert shared_names([work / "ckpt" / "t1", Path("/mnt/disk/d1")]) == {
        work / "ckpt" / "t1": "./t1", Path("/mnt/disk/d1"): "./d1"}
    assert shared_names([work / "a" / "final", Path("/home/bob/b/final")]) == {
        work / "a" / "final": "./a/final", Path("/home/bob/b/final"): "./b/final"}
    # a Hugging Face cache copy keeps the part that reads back as its Hub commit, and leaves the parent alone
    snapshot = Path("/home/alice/.cache/huggingface/hub/models--org--name/snapshots") / ("a" * 40)
    names = shared_names([snapshot, work / "t1"])
    assert names == {snapshot: f"./models--org--name/snapshots/{'a' * 40}", work / "t1": "./t1"}
    assert ModelRef.parse(names[snapshot]) == ModelRef(repo_id="org/name", revision="a" * 40)


def test_a_shared_recipe_names_local_folders_and_keeps_hub_inputs(tmp_path):
    for name in ("base", "t1"):
        (tmp_path / "w" / name).mkdir(parents=True)
    recipe = Recipe.from_dict({"method": "task_arithmetic", "base_model": str(tmp_path / "w" / "base"), "models": [
        {"model": str(tmp_path / "w" / "t1"), "task": "t1", "dataset": {"path": str(tmp_path / "d"), "split": "val"}},
        {"model": "org/t2@abc", "task": "t2", "dataset": "org/data"}]})
    shared = recipe.shared(shared_names(recipe.local_paths))
    assert [str(ref) for ref in shared.inputs] == ["./w/base", "./w/t1", "org/t2@abc"]
    assert shared.datasets == {"t1": DatasetRef("./d", split="val"), "t2": DatasetRef("org/data")}
    again = Recipe.from_yaml(shared.to_yaml(), base_dir=tmp_path)  # parses, and beside the folders reads them
    assert again.inputs == recipe.inputs and again.datasets["t1"].path == str(tmp_path / "d")
    assert str(tmp_path) not in shared.to_yaml()
