"""The web app: the form <-> recipe conversion, what the views show, and the app driven by gradio_client
against the local Hub (plan, merge, try, push), plus the Space's files and `hubmerge space deploy`."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from PIL import Image

from hubmerge.errors import MethodParameterError, PushError, RecipeError
from hubmerge.evaluation import CompareReport, EvalReport, TaskResult
from hubmerge.methods import _registry, get_method
from hubmerge.presets import load_preset
from hubmerge.recipe import DatasetRef, Recipe
from hubmerge.ui.forms import AS_INPUTS, MODEL_COLUMNS, form_values, param_fields, recipe_from_form
from hubmerge.ui.views import card_body, results_chart, results_note, results_table

from ._ui_helpers import HubModels, publish_fixtures, running_app

# ---------------------------------------------------------------- the form


def test_preset_round_trips_through_the_form():
    recipe = load_preset("convnext-base-224-8tasks")
    values = form_values(recipe)
    assert len(values.models) == 8 and values.models[0][0].startswith("tanganke/convnext-base-224_")
    back = recipe_from_form(base_model=values.base_model, models=values.models, method=values.method,
                            parameters=values.parameters, dtype=values.dtype, device=values.device)
    assert back.models == recipe.models and back.base_model == recipe.base_model
    assert back.parameters == get_method(recipe.method).resolve_params(recipe.parameters)


def test_form_ignores_blank_rows_and_reads_cells():
    recipe = recipe_from_form(
        base_model=" org/base@main ",
        models=[["org/a", "cars", "tanganke/stanford_cars:test", "1"], ["", "", "", float("nan")],
                ["org/b", "", "ufldl-stanford/svhn:cropped_digits:test", "2"]],
        method="dare", parameters={"seed": 3.0, "drop_rate": 0.25, "combine": "ties"}, dtype=AS_INPUTS, device="cpu",
    )
    assert [str(e.model) for e in recipe.models] == ["org/a", "org/b"]
    assert recipe.models[0].task == "cars" and str(recipe.models[0].dataset) == "tanganke/stanford_cars:test"
    assert recipe.models[1].dataset.name == "cropped_digits" and recipe.models[1].dataset.split == "test"
    assert recipe.models[1].weight == 2.0 and recipe.dtype is None and str(recipe.base_model) == "org/base@main"
    assert recipe.parameters["seed"] == 3 and isinstance(recipe.parameters["seed"], int)


def test_a_non_default_device_and_a_zero_weight_round_trip_through_the_form():
    recipe = Recipe.from_dict({"method": "weighted_average", "device": "cpu",
                               "models": [{"model": "org/a", "weight": 0}, {"model": "org/b", "weight": 1}]})
    values = form_values(recipe)
    assert values.device == "cpu" and [row[3] for row in values.models] == [0, 1]
    back = recipe_from_form(base_model=values.base_model, models=values.models, method=values.method,
                            parameters=values.parameters, dtype=values.dtype, device=values.device)
    assert back.device == "cpu" and [e.weight for e in back.models] == [0.0, 1.0]


def test_a_recipes_named_columns_and_windows_paths_round_trip_through_the_form():
    """A loaded recipe's dataset that names its columns shows them in their own cells, which the merge reads back:
    the cell showed `path:split`, so a merge from the form lost the columns. A Windows path's one line reads back
    too (its drive's colon is no split's)."""
    datasets = [DatasetRef("uoft-cs/cifar100", label_column="coarse_label"),
                DatasetRef("org/d", "cfg", "val", image_column="img: path"), DatasetRef("C:\\data\\eurosat"),
                DatasetRef("org/e", "cfg", "validation"), DatasetRef("org/f")]
    recipe = Recipe.from_dict({"method": "simple_average", "models": [
        {"model": f"org/m{i}", "task": f"t{i}", "dataset": d.to_yaml()} for i, d in enumerate(datasets)]})
    values = form_values(recipe)
    assert [[row[2], *row[4:]] for row in values.models] == [
        ["uoft-cs/cifar100:test", "coarse_label", ""], ["org/d:cfg:val", "", "img: path"],
        ["C:\\data\\eurosat:test", "", ""], ["org/e:cfg:validation", "", ""], ["org/f:test", "", ""]]
    back = recipe_from_form(base_model=values.base_model, models=values.models, method=values.method,
                            parameters=values.parameters)
    assert back.datasets == recipe.datasets


def test_the_form_names_a_datasets_label_and_image_columns_in_their_own_cells():
    """The columns could only be named in the dataset cell as a YAML mapping on one line; a blank cell names none
    (the evaluation finds the columns by type or usual name), a mapping's own columns still count."""
    recipe = recipe_from_form(base_model="org/base", method="simple_average", parameters={}, models=[
        ["org/a", "a", "org/d:cfg:val", "", " coarse_label ", "img"], ["org/b", "b", "org/e", "", " ", None],
        ["org/c", "c", "{path: 'C:\\data\\x', label_column: fine}", "", "", "picture"],
        ["org/e", "e", "{path: org/f, image_column: img}", "", "", "img"]])
    assert recipe.datasets == {"a": DatasetRef("org/d", "cfg", "val", "coarse_label", "img"), "b": DatasetRef("org/e"),
                               "c": DatasetRef("C:\\data\\x", label_column="fine", image_column="picture"),
                               "e": DatasetRef("org/f", image_column="img")}
    assert recipe.to_dict()["models"][1]["dataset"] == "org/e"  # no columns written for blank cells


def test_api_rows_shorter_than_the_table_are_padded():
    """An API caller may send [model] or [model, task] rows: the missing cells are blank, not an error."""
    recipe = recipe_from_form(base_model="org/base", models=[["org/a"], ["org/b", "svhn"]],
                              method="task_arithmetic", parameters={})
    assert [(str(e.model), e.task, e.dataset, e.weight) for e in recipe.models] == [
        ("org/a", None, None, None), ("org/b", "svhn", None, None)]


@pytest.mark.parametrize(
    ("models", "parameters", "error", "words"),
    [
        ([], {}, RecipeError, "add at least one model"),
        ([["", "task", "", ""]], {}, RecipeError, "row 1: give a model"),
        ([["org/a", "", "", "heavy"]], {}, RecipeError, "weight must be a number"),
        ([["org/a", "", "", ""], ["org/b", "", "", ""]], {"scaling_factor": -1.0}, MethodParameterError, ">= 0"),
        # an API caller's JSON text or list was an unexpected AttributeError ('str' object has no 'items')
        ([["org/a", "", "", ""]], '{"scaling_factor": 0.3}', RecipeError, "parameters must be a mapping like"),
        ([["org/a", "", "", ""]], [1], RecipeError, "parameters must be a mapping like"),
        ([["org/a", "", "{path: org/d, label_column: [", ""]], {}, RecipeError, "row 1: the dataset .* is no YAML"),
        ([["org/a", "", "{label_column: y}", ""]], {}, RecipeError, r"models\[0\]\.dataset.* a mapping with 'path'"),
        ([["org/a", "", "{path: org/d, label_column: ''}", ""]], {}, RecipeError, "label_column.*a column's name"),
        ([["org/a", "a", "", "", "label"]], {}, RecipeError, "row 1: a label or image column .* give the dataset too"),
        ([["org/a", "a", "{path: org/d, label_column: y}", "", "z"]], {}, RecipeError,
         "row 1: the dataset names label_column 'y' and its label column cell 'z': name it once"),
        ([["org/a", "a", "org/d::test", "", "z"]], {}, RecipeError, r"'models\[0\]\.dataset': cannot read dataset"),
        # aliases of aliases (ten million strings): the error's repr of the column wrote them all out
        ([["org/a", "", "{path: org/d, l0: &a0 [l, l, l, l, l, l, l, l, l, l], " + ", ".join(
            f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)) + ", label_column: *a6}", ""]],
         {}, RecipeError, "row 1: the dataset .* writes out to more than 1,000,000"),
    ],
)
def test_bad_form_values_are_typed_errors(models, parameters, error, words):
    with pytest.raises(error, match=words):
        recipe_from_form(base_model="org/base", models=models, method="task_arithmetic", parameters=parameters)


def test_an_uploaded_recipe_fills_the_form(tmp_path):
    """The "Load recipe YAML" button: a hubmerge recipe or a FusionBench config fills the form; a relative path,
    which the uploaded copy (in Gradio's cache) cannot follow, is said to be one at once, not at the merge."""
    import gradio as gr

    from hubmerge.ui.app import AppHandlers

    handlers = AppHandlers()
    upload = tmp_path / "gradio" / "abc123"
    upload.mkdir(parents=True)
    (upload / "r.yaml").write_text("method: ties\nbase_model: org/base\nmodels:\n  - {model: org/a@v1, task: cars}\n"
                                   "  - {model: /abs/b, task: svhn, dataset: 'org/svhn:test'}\n")
    base, models, method, parameters, *_ = handlers.load_recipe_file(str(upload / "r.yaml"))
    assert (base, method, parameters["density"]) == ("org/base", "ties", 0.2)
    assert [row[:3] for row in models] == [["org/a@v1", "cars", ""], ["/abs/b", "svhn", "org/svhn:test"]]
    (upload / "fb.yaml").write_text("method: dare/task_arithmetic\n"
                                    "modelpool: {models: {_pretrained_: org/base, cars: org/a, svhn: org/b}}\n")
    assert handlers.load_recipe_file(str(upload / "fb.yaml"))[2] == "dare"
    (upload / "rel.yaml").write_text("method: simple_average\nmodels:\n  - {model: ./finetuned/cars, task: cars}\n"
                                     "  - {model: org/b, task: svhn}\n")
    with pytest.raises(gr.Error, match="the input model of task 'cars' by the relative path 'finetuned/cars', which an "
                                       "uploaded recipe cannot follow"):
        handlers.load_recipe_file(str(upload / "rel.yaml"))
    (upload / "data.yaml").write_text("method: simple_average\nmodels:\n  - {model: org/a, task: cars, dataset: ./cars}\n")
    with pytest.raises(gr.Error, match="the dataset of task 'cars' by the relative path 'cars'"):
        handlers.load_recipe_file(str(upload / "data.yaml"))


def test_an_uploaded_recipes_errors_name_the_file_not_gradios_copy_on_the_server(tmp_path):
    """They said "(in /tmp/hubmerge-app-x/gradio/398f…/r.yaml)": a path the visitor never chose, which shows
    the server's folders to whoever reaches the app."""
    import gradio as gr

    from hubmerge.ui.app import AppHandlers

    upload = tmp_path / "gradio" / "398fa5856acb"
    upload.mkdir(parents=True)
    for name, text, words in (("method.yaml", "method: tyes\nmodels:\n  - {model: org/a}\n", "Did you mean 'ties'?"),
                              ("broken.yaml", "models: [ {model: a\n", "broken.yaml: the YAML cannot be parsed")):
        (upload / name).write_text(text)
        with pytest.raises(gr.Error, match=words) as caught:
            AppHandlers().load_recipe_file(str(upload / name))
        assert name in caught.value.message and str(tmp_path) not in caught.value.message


def test_a_new_method_gets_form_fields_without_ui_code():
    @_registry.register("test_only_scaled_mean", pretty_name="Scaled mean (test)", bounds={"gain": (0.0, 2.0)})
    def scaled_mean(tensors, *, gain: float = 1.0, flip: bool = False, mode: str = "a"):
        return torch.stack(list(tensors)).mean(0) * gain * (-1 if flip else 1)

    try:
        fields = {f.spec_name: f for f in param_fields()["test_only_scaled_mean"]}
        assert fields["gain"].kind == "number" and (fields["gain"].minimum, fields["gain"].maximum) == (0.0, 2.0)
        assert fields["flip"].kind == "checkbox" and fields["mode"].kind == "text"
        from hubmerge.ui import build_app

        app = build_app()  # the method appears in the menu, with its fields
        dropdowns = [b for b in app.blocks.values() if getattr(b, "label", None) == "Method"]
        assert any("test_only_scaled_mean" in [c[0] for c in d.choices] for d in dropdowns)
        assert any(getattr(b, "label", None) == "gain" for b in app.blocks.values())
    finally:
        del _registry._REGISTRY["test_only_scaled_mean"]


# ---------------------------------------------------------------- views


def _result(task: str, accuracy: float) -> TaskResult:
    return TaskResult(accuracy=accuracy, loss=1.0 - accuracy, num_samples=10, dataset=f"data/{task}:test")


def _report(name: str, scores: dict[str, float]) -> EvalReport:
    return EvalReport(name, {t: _result(t, a) for t, a in scores.items()}, "cpu")


def test_results_table_and_chart_match_the_report():
    tasks = ("low", "high")
    comparison = CompareReport(
        merged=_report("merged", {"low": 0.9, "high": 0.8}),
        base=_report("base", {"low": 0.5, "high": 0.4}),
        finetuned={"low": _report("ft-low", {"low": 0.95, "high": 0.2}),
                   "high": _report("ft-high", {"low": 0.3, "high": 0.97})},
        tasks=tasks,
    )
    table = results_table(comparison)
    assert list(table.columns) == ["model", "low", "high", "average"]
    merged = table.iloc[0]
    assert merged["model"] == "merged" and merged["low"] == 90.0 and math.isclose(merged["average"], 85.0)
    individual = table[table["model"] == "individual (own fine-tune)"].iloc[0]
    assert (individual["low"], individual["high"]) == (95.0, 97.0)
    chart = results_chart(comparison)
    assert set(chart["model"]) == {"merged", "base + task heads", "individual (own fine-tune)"}
    assert len(chart) == 3 * 3  # 3 models x (2 tasks + average)
    assert chart[(chart["task"] == "high") & (chart["model"] == "base + task heads")]["accuracy"].item() == 40.0
    assert results_note(comparison) == ""  # nothing to say when no split was cut short


def test_a_subset_of_a_split_is_said_next_to_the_results():
    whole = TaskResult(0.9, 0.1, num_samples=218, split_size=218)
    part = TaskResult(0.8, 0.2, num_samples=100, split_size=1234)
    note = results_note(EvalReport("merged", {"low": whole, "high": part}))
    assert note == "Accuracy measured on a fixed random subset of each split (examples: high 100 of 1,234)."


def test_classes_matched_by_position_are_said_next_to_the_results():
    renamed = TaskResult(0.9, 0.1, num_samples=218, split_size=218, by_position=True)
    note = results_note(EvalReport("merged", {"low": renamed, "high": TaskResult(0.8, 0.2)}))
    assert note == ("Classes matched by position for low: the dataset names them otherwise than the head, "
                    "so these accuracies hold only if both list them in the same order.")


def test_card_body_drops_the_front_matter_and_links_to_the_hub(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\ntags: [a]\n---\n\n# Title\n\nBody\n")
    assert card_body(card, "https://huggingface.co") == "# Title\n\nBody\n"
    # a card for a Hub on this machine links from that Hub's root, which in the app is the app's own
    card.write_text("| base | [org/base](/org/base) |\n")
    assert card_body(card, "http://127.0.0.1:8765/") == "| base | [org/base](http://127.0.0.1:8765/org/base) |\n"


# ---------------------------------------------------------------- the app over HTTP


@pytest.fixture(scope="module")
def hub_models(local_hub) -> HubModels:
    return publish_fixtures(local_hub.endpoint, local_hub.alice_token)


@pytest.fixture(scope="module")
def app_url(local_hub, hub_models, tmp_path_factory):
    os.environ.pop("HF_HUB_OFFLINE", None)  # leaked by session fixtures of other modules
    with running_app(local_hub.endpoint, hub_models, tmp_path_factory.mktemp("app")) as url:
        yield url


def test_the_app_starts_on_another_port_where_the_one_chosen_was_taken(local_hub, hub_models, tmp_path, monkeypatch):
    """A free port is closed before Gradio binds it, and another pytest process (pytest-xdist) may take it
    meanwhile: the app is then started on another one, not failed."""
    import socket

    import httpx

    from . import _ui_helpers

    os.environ.pop("HF_HUB_OFFLINE", None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, free_port = taken.getsockname()[1], _ui_helpers.free_port
        chosen = iter([busy])  # then free ones
        monkeypatch.setattr(_ui_helpers, "free_port", lambda: next(chosen, None) or free_port())
        with running_app(local_hub.endpoint, hub_models, tmp_path) as url:
            assert next(chosen, None) is None  # the taken one was tried first
            assert not url.endswith(f":{busy}/") and httpx.get(url, timeout=30).status_code == 200


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def _form(hub_models: HubModels, method: str = "task_arithmetic", parameters: dict | None = None) -> list:
    values = form_values(hub_models.recipe(method))
    table = {"headers": list(MODEL_COLUMNS), "data": values.models}
    return [values.base_model, table, values.method, parameters or values.parameters, values.dtype, values.device]


def test_every_api_output_has_a_name(client):
    """The Markdown outputs were `value_57`, `value_63` and `value_83` in the API page and `view_api()`."""
    outputs = {name: [r["label"] for r in endpoint["returns"]]
               for name, endpoint in client.view_api(print_info=False, return_format="dict")["named_endpoints"].items()}
    assert outputs["/plan"][0] == "Verdict" and outputs["/merge"][0] == "Status" and outputs["/push"] == ["Push"]
    assert not [label for labels in outputs.values() for label in labels if label.startswith("value_")]
    assert sorted(outputs) == ["/cancel", "/merge", "/plan", "/push", "/try_it"]  # none for in-page steps


@pytest.mark.slow
def test_client_plans_merges_tries_and_pushes(client, hub_models, local_hub, tmp_path):
    headline, inputs, summary = client.predict(*_form(hub_models), "", api_name="/plan")
    assert headline.startswith("**Compatible:** 5 models")
    assert [row[0] for row in inputs["data"]][:1] == ["base"] and len(inputs["data"]) == 5
    assert any(row[0] == "head: digits_parity" and "kept (fine-tuned)" in row[1] for row in summary["data"])

    status, table, chart, card, recipe_file, _ = client.predict(*_form(hub_models), "", api_name="/merge")
    assert status.startswith("Merged in") and "4 task head(s)" in status
    assert "random subset of each split (examples: digits_low 48 of " in status  # the app's max_samples=48
    rows = {row[0]: row[1:] for row in table["data"]}
    assert rows["merged"][-1] > rows["base + task heads"][-1]  # average accuracy: merging helped
    bars = chart["value"]["data"]  # an update: the plot's value and its bar order
    assert {"merged", "base + task heads", "individual (own fine-tune)"} <= {r[2] for r in bars}
    assert chart["sort"] == [r[0] for r in bars] and chart["sort"][0].startswith("digits_low")
    assert "hubmerge" in card and "digits_parity" in card
    recipe = yaml.safe_load(Path(recipe_file).read_text())
    assert recipe["method"] == "task_arithmetic" and all("@" in m["model"] for m in recipe["models"])

    hits = 0
    for index in range(5):
        image, truth = _digit_image("digits_high", index)
        top5 = client.predict("digits_high", image, api_name="/try_it")
        assert len(top5["confidences"]) == 5 and truth in {c["label"] for c in top5["confidences"]}
        hits += top5["label"] == truth
    assert hits >= 4  # the merged backbone with the digits_high head reads these digits

    repo_id = "alice/ui-merged"
    message = client.predict(repo_id, False, False, local_hub.alice_token, api_name="/push")
    assert repo_id in message and "one commit" in message
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    files = set(api.list_repo_files(repo_id))
    assert {"README.md", "model.safetensors", "hubmerge_recipe.yaml", "eval_results.json", "eval_scope.json",
            "heads/digits_low/model.safetensors"} <= files
    assert len(api.list_repo_commits(repo_id)) == 2  # created, then everything in one commit
    pushed_card = ModelCard.load(api.hf_hub_download(repo_id, "README.md", cache_dir=tmp_path))
    assert pushed_card.data.base_model_relation == "merge" and repo_id in pushed_card.text
    assert "(48 of " in pushed_card.text  # the app evaluates 48 examples per task, and the card says so
    assert local_hub.alice_token not in message + card + status


def _digit_image(task: str, index: int) -> tuple[str, str]:
    """A test image of ``task`` saved as PNG (gradio_client uploads files) and its true class name."""
    import datasets
    from gradio_client import handle_file

    from hubmerge.fixtures import build_fixtures

    test = datasets.load_from_disk(str(build_fixtures(family="convnext").datasets[task]))["test"]
    row = test[index]
    path = Path(os.environ["HF_HOME"]) / f"{task}-{index}.png"
    row["image"].save(path)
    return handle_file(str(path)), test.features["label"].names[row["label"]]


def test_bad_repo_id_and_missing_merge_are_readable_errors(client, app_url, local_hub):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    fresh = Client(app_url, verbose=False)  # a new session has merged nothing; its page's buttons are off,
    with pytest.raises(AppError, match="merge first"):  # but the API reaches the handlers all the same
        fresh.predict("alice/x", False, False, local_hub.alice_token, api_name="/push")
    with pytest.raises(AppError, match="merge first: there is no merged model in this session"):
        fresh.predict(None, None, api_name="/try_it")
    with pytest.raises(AppError, match="not a valid repo id"):
        client.predict("not a repo id", False, False, local_hub.alice_token, api_name="/push")
    with pytest.raises(AppError, match="no_such_method is not in the list of choices"):
        client.predict("org/base", {"headers": ["model", "task", "dataset", "weight"], "data": [["org/a", "", "", ""]]},
                       "no_such_method", {}, AS_INPUTS, "cpu", "", api_name="/plan")


@pytest.mark.slow
def test_the_forms_dataset_columns_reach_the_merges_recipe(app_url, hub_models):
    """The label and image column cells (read by name where the evaluation would not find them) are the recipe's
    `label_column` / `image_column`; a blank cell leaves them out."""
    from gradio_client import Client

    base, table, *rest = _form(hub_models)
    table["data"] = [[*row[:4], "label", "image"] if number == 0 else [*row[:4], " ", ""]
                     for number, row in enumerate(table["data"])]
    recipe_file = Client(app_url, verbose=False).predict(base, table, *rest, "", 4, "name", api_name="/merge")[4]
    datasets = [entry["dataset"] for entry in yaml.safe_load(Path(recipe_file).read_text())["models"]]
    assert (datasets[0]["label_column"], datasets[0]["image_column"]) == ("label", "image")
    assert len(datasets) == 4 and all(isinstance(dataset, str) for dataset in datasets[1:])  # path:split, no columns


@pytest.mark.slow
def test_an_output_deleted_by_the_cleanup_is_said_so_by_every_action(hub_models, local_hub, tmp_path):
    """A session's output deleted an hour after its merge (another session's merge cleans up) was answered "merge
    first", to a session that had; Push and Try it now say what happened, in the words the page shows."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    os.environ.pop("HF_HUB_OFFLINE", None)
    values = form_values(hub_models.recipe())
    table = {"headers": ["model", "task"], "data": [row[:2] for row in values.models]}  # no datasets: no evaluation
    form = (values.base_model, table, values.method, values.parameters, values.dtype, values.device, "")
    with running_app(local_hub.endpoint, hub_models, tmp_path / "work") as url:
        client = Client(url, verbose=False)
        assert client.predict(*form, api_name="/merge")[0].startswith("Merged in")
        (session,) = (tmp_path / "work").iterdir()
        hours_ago = time.time() - 2 * 3600
        os.utime(session, (hours_ago, hours_ago))
        with pytest.raises(AppError, match="add at least one model"):  # another visitor's merge, refused at once
            Client(url, verbose=False).predict(*form[:1], {"headers": list(MODEL_COLUMNS), "data": []}, *form[2:],
                                               api_name="/merge")
        assert not session.exists()
        answers = []
        for args, endpoint in (((f"alice/x-{os.getpid()}", False, False, local_hub.alice_token), "/push"),
                               ((values.models[0][1], None), "/try_it")):
            with pytest.raises(AppError) as caught:
                client.predict(*args, api_name=endpoint)
            answers.append(str(caught.value))
    gone = ("RecipeError: this session's merged model was deleted: the app keeps one for 60 minutes after its merge, "
            "until the session's next merge; merge again to try or push it")
    assert answers == [gone, gone]


def test_plan_errors_name_the_problem_and_never_the_token(client, local_hub):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        client.predict("demo-org/does-not-exist", {"headers": ["model", "task", "dataset", "weight"],
                                                     "data": [["demo-org/nope", "t", "", ""]]},
                       "simple_average", {}, AS_INPUTS, "cpu", local_hub.alice_token, api_name="/plan")
    assert "does-not-exist" in str(caught.value) or "nope" in str(caught.value)
    assert "in the web app, the token field or sign-in" in str(caught.value)  # not only the CLI's --token / HF_TOKEN
    assert local_hub.alice_token not in str(caught.value)


def test_an_app_served_to_others_reads_no_local_folder(tmp_path, monkeypatch):
    """On a Space (or any host other than loopback) anyone could name a folder of the server: a private model
    in its Hugging Face cache, merged and pushed to their own repo, or `/`, walked whole by the hints."""
    import gradio as gr

    from hubmerge.ui import app as ui_app
    from hubmerge.ui.app import AppHandlers

    hub_only = AppHandlers(local_paths=False)
    cached = tmp_path / "hub" / "models--org--private" / "snapshots" / ("0" * 40)
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    cached = str(cached)
    for base, models in ((cached, [["org/a", "a", "", None]]), ("org/base", [["/", "a", "", None]]),
                         ("org/base", [["org/a", "a", str(tmp_path), None]])):
        with pytest.raises(RecipeError, match="is a local path .*: this app is served to others, so it reads "
                                              "models and datasets from the Hub only"):
            hub_only.recipe(base, models, "task_arithmetic", {}, "", "")
    (tmp_path / "r.yaml").write_text(f"method: simple_average\nmodels:\n  - {{model: {cached}, task: a}}\n")
    with pytest.raises(gr.Error, match="this app is served to others"):
        hub_only.load_recipe_file(str(tmp_path / "r.yaml"))
    assert AppHandlers().recipe(cached, [["org/a", "a", "", None]], "task_arithmetic", {}, "", "").base_model

    # what launch_app decides: local folders, the owner's token and the machine's login (HF_TOKEN, the token
    # file) only for an app on loopback that is no Space; a shared app used the owner's token for anyone
    from huggingface_hub import constants

    chosen: dict[str, object] = {}
    launched = SimpleNamespace(launch=lambda **_: chosen.update(implicit_off=constants.HF_HUB_DISABLE_IMPLICIT_TOKEN))
    monkeypatch.setattr(ui_app, "build_app", lambda **kw: chosen.update(local=kw["local_paths"], token=kw["token"])
                        or launched)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "g"))
    monkeypatch.delenv("GRADIO_SHARE", raising=False)
    # the suite turns implicit tokens off for every test: on again, as for a user, or nothing tells it is turned off
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    before = constants.HF_HUB_DISABLE_IMPLICIT_TOKEN
    for host, space, told, local, token in (("127.0.0.1", None, None, True, "hf_owner"),
                                            ("0.0.0.0", None, None, False, None), (None, "alice/app", None, False, None),
                                            ("0.0.0.0", None, True, True, None)):
        monkeypatch.delenv("SPACE_ID", raising=False)
        if space:
            monkeypatch.setenv("SPACE_ID", space)
        ui_app.launch_app(host=host, local_paths=told, token="hf_owner")
        assert (chosen["local"], chosen["token"], chosen["implicit_off"]) == (local, token, token is None or before)
        assert constants.HF_HUB_DISABLE_IMPLICIT_TOKEN == before
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("GRADIO_SHARE", "true")  # a share link reaches anyone
    ui_app.launch_app(host="127.0.0.1", token="hf_owner")
    assert (chosen["local"], chosen["token"]) == (False, None)


def test_a_signed_in_visitor_acts_with_their_own_token():
    """Sign-in first (a Space's visitor), then the token typed in, then the app's own (the demo's): a Space's
    visitor who signed in had no token for their push, and the app's token outranked the one typed in."""
    import gradio as gr

    from hubmerge.ui.app import AppHandlers

    handlers = AppHandlers(default_token="hf_owner")
    visitor = gr.OAuthToken(token="hf_visitor", scope="manage-repos", expires_at=0)
    assert handlers.token_for("hf_typed", visitor) == "hf_visitor"
    assert handlers.token_for(" hf_typed ", None) == "hf_typed"
    for typed, oauth in (("", None), (None, None), ("  ", gr.OAuthToken(token="", scope="", expires_at=0))):
        assert handlers.token_for(typed, oauth) == "hf_owner"
    assert AppHandlers().token_for("", None) is None


def test_a_push_without_the_visitors_token_never_falls_back_to_the_machines(tmp_path, monkeypatch):
    """A visitor who neither signed in nor typed a token is refused: publishing would otherwise look the token up
    itself and find the machine's (a Space's HF_TOKEN secret: its owner's)."""
    import gradio as gr

    from hubmerge import publish as publishing
    from hubmerge.ui.app import AppHandlers

    monkeypatch.setenv("HF_TOKEN", "hf_owner_secret")
    pushed = []
    monkeypatch.setattr(publishing, "publish_output", lambda *a, **k: pushed.append(k))
    (tmp_path / "merged").mkdir()
    with pytest.raises(gr.Error, match="no token: paste a token with write access") as caught:
        AppHandlers().push(str(tmp_path / "merged"), "alice/x", False, False, "", None, progress=lambda *a, **k: None)
    assert pushed == [] and "hf_owner_secret" not in caught.value.message


def test_push_refuses_bad_repo_ids_before_any_work():
    from hubmerge.hub.push import check_repo_id

    for bad in ("no-namespace", "a/b/c", "bad id/x", "org/-x-"):
        with pytest.raises(PushError, match="not a valid repo id"):
            check_repo_id(bad)
    check_repo_id("alice/merged-model")


def test_errors_stay_on_the_page_until_closed_and_name_no_token(caplog):
    """A merge can fail while the user is on another tab: Gradio's default toast goes after 10 s."""
    import gradio as gr

    from hubmerge.ui.app import _user_errors

    for failure in (RecipeError("no such base"), KeyError("oops")):
        with pytest.raises(gr.Error) as caught, _user_errors("Merge", "hf_secret_value"):
            raise type(failure)(f"{failure.args[0]} with hf_secret_value")
        assert caught.value.duration is None and "hf_secret_value" not in caught.value.message
    assert "oops with ***" in caplog.text and "hf_secret_value" not in caplog.text  # nor in the server's log


def test_cancel_stops_the_merge_and_leaves_nothing(hub_models, local_hub, tmp_path):
    import gradio as gr

    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work")
    # Cancel also takes a merge waiting behind another page's off the queue: "Nothing to cancel." said otherwise
    assert handlers.cancel(None) == "No merge is running in this page; one waiting in the queue, if any, will not start."
    calls = []

    def progress(value, desc=None, total=None, unit="steps"):  # the user presses Cancel as the merge starts
        calls.append(desc)
        handlers.cancel(None)

    values = form_values(hub_models.recipe())
    with pytest.raises(gr.Error, match="CancelledError"):
        handlers.merge(values.base_model, values.models, values.method, values.parameters, values.dtype,
                       values.device, progress=progress)
    assert calls and not any((tmp_path / "work").rglob("*.safetensors"))
    assert handlers._cancels == {}


def test_a_push_during_the_pages_merge_says_to_wait_for_it(tmp_path):
    """The merge clears the page's output as it starts: Push then said "merge first", to a page that had."""
    import gradio as gr

    from hubmerge.ui import AppHandlers

    handlers = AppHandlers(work_dir=tmp_path / "work", default_token="hf_testtoken")
    merging, idle = SimpleNamespace(session_hash="merging"), SimpleNamespace(session_hash="idle")
    handlers._cancels["merging"] = threading.Event()
    quiet = {"progress": lambda *a, **k: None}
    with pytest.raises(gr.Error, match="this page's merge is still running: push once it has ended"):
        handlers.push(None, "alice/x", False, False, request=merging, **quiet)
    with pytest.raises(gr.Error, match="merge first: there is no merged model in this session"):
        handlers.push(None, "alice/x", False, False, request=idle, **quiet)


@pytest.mark.slow
def test_closing_the_page_stops_its_merge_and_deletes_its_output(hub_models, local_hub, tmp_path):
    import gradio as gr

    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work", max_samples=16)
    values = form_values(hub_models.recipe())
    form = (values.base_model, values.models, values.method, values.parameters, values.dtype, values.device)
    done, kept = SimpleNamespace(session_hash="done"), SimpleNamespace(session_hash="kept")

    for request in (done, kept):
        output = handlers.merge(*form, request=request, progress=lambda *a, **k: None)[5]
        image, _ = _digit_image("digits_low", 0)
        handlers.try_it(output, "digits_low", Image.open(image["path"]))  # caches the loaded model
    assert len(handlers._models) == 2
    handlers.end_session(done)
    assert not (tmp_path / "work" / "done").exists() and (tmp_path / "work" / "kept").is_dir()
    assert [Path(key[0]).parent.name for key in handlers._models] == ["kept"]

    running = SimpleNamespace(session_hash="running")  # the page closes while its merge runs
    with pytest.raises(gr.Error, match="CancelledError"):
        handlers.merge(*form, request=running, progress=lambda *a, **k: handlers.end_session(running))
    assert not (tmp_path / "work" / "running").exists() and handlers._cancels == {}


def test_outputs_of_sessions_that_never_close_go_after_a_while(tmp_path):
    """A client of the app's API has no page to close: each of its merges left a whole merged model in the
    work folder until the app stopped. A merge deletes other sessions' outputs past ``keep_outputs_s``,
    never a running merge's, nor a recent one."""
    import gradio as gr

    from hubmerge.ui import AppHandlers

    handlers = AppHandlers(work_dir=tmp_path / "work", keep_outputs_s=600, local_paths=False)
    for session in ("api-call", "running", "recent"):
        (tmp_path / "work" / session / "merged-1234").mkdir(parents=True)
    hour_ago = time.time() - 3600
    for session in ("api-call", "running"):
        os.utime(tmp_path / "work" / session, (hour_ago, hour_ago))
    handlers._cancels["running"] = threading.Event()
    with pytest.raises(gr.Error):  # refused at once (no model given): what came before it ran all the same
        handlers.merge("", [], "simple_average", {}, "", "cpu", request=SimpleNamespace(session_hash="new"),
                       progress=lambda *a, **k: None)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["recent", "running"]
    with pytest.raises(gr.Error):  # a page's new merge replaces its earlier output (the page clears its results)
        handlers.merge("", [], "simple_average", {}, "", "cpu", request=SimpleNamespace(session_hash="recent"),
                       progress=lambda *a, **k: None)
    assert not (tmp_path / "work" / "recent").exists()
    gone = "this session's merged model was deleted: the app keeps one for 10 minutes after its merge"
    with pytest.raises(gr.Error, match=gone):  # not "merge first", to a session that had
        handlers.push(str(tmp_path / "work" / "api-call" / "merged-1234"), "alice/x", False, False)
    with pytest.raises(gr.Error, match=gone):
        handlers.try_it(str(tmp_path / "work" / "api-call" / "merged-1234"), "t", None)
    with pytest.raises(gr.Error, match="merge first: there is no merged model in this session to push \\(one is kept"):
        handlers.push(None, "alice/x", False, False)


def test_a_merge_or_a_closed_page_leaves_an_output_a_push_is_uploading(tmp_path, monkeypatch):
    """A page that pressed Merge while its push uploaded the previous output deleted that output under the push,
    which then committed nothing ("Pushed 0 files"); the push now ends with the output, then deletes it."""
    import gradio as gr

    from hubmerge import publish as publishing
    from hubmerge.ui import AppHandlers

    handlers = AppHandlers(work_dir=tmp_path / "work", default_token="hf_testtoken")
    page = SimpleNamespace(session_hash="page")
    folder = tmp_path / "work" / "page"
    seen = []

    def publish_output(output, repo_id, **kwargs):  # the page merges again, then closes, during the upload
        with pytest.raises(gr.Error):  # refused at once (no model given), after forgetting the page's outputs
            handlers.merge("", [], "simple_average", {}, "", "cpu", request=page, progress=lambda *a, **k: None)
        seen.append(sorted(p.name for p in folder.rglob("*")))
        handlers.end_session(page)
        seen.append(sorted(p.name for p in folder.rglob("*")))
        return SimpleNamespace(files=["model.safetensors"], commit_sha="0" * 40, url=f"http://hub/{repo_id}")

    monkeypatch.setattr(publishing, "publish_output", publish_output)
    for name in ("merged-0", "merged-1"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.safetensors").write_bytes(b"weights")
    pushed = handlers.push(str(folder / "merged-1"), "alice/x", False, False, progress=lambda *a, **k: None)
    assert pushed.startswith("Pushed 1 files") and seen == [["merged-1", "model.safetensors"]] * 2
    assert not folder.exists() and not handlers._uploads


def test_another_pages_merge_during_a_push_leaves_the_pushed_output_to_its_page(tmp_path, monkeypatch):
    """Only the page that forgot an output hands it to the push to delete: another page merging during the
    upload must not make the pushing page lose its output (its Try it, its next push) once the push ends."""
    import gradio as gr

    from hubmerge import publish as publishing
    from hubmerge.ui import AppHandlers

    handlers = AppHandlers(work_dir=tmp_path / "work", default_token="hf_testtoken")
    other = SimpleNamespace(session_hash="other")
    output = tmp_path / "work" / "page" / "merged-1"
    output.mkdir(parents=True)
    (output / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "work" / "other" / "merged-0").mkdir(parents=True)

    def publish_output(path, repo_id, **kwargs):
        with pytest.raises(gr.Error):  # the other page merges again: its own outputs go
            handlers.merge("", [], "simple_average", {}, "", "cpu", request=other,
                           progress=lambda *a, **k: None)
        return SimpleNamespace(files=["model.safetensors"], commit_sha="0" * 40, url=f"http://hub/{repo_id}")

    monkeypatch.setattr(publishing, "publish_output", publish_output)
    handlers.push(str(output), "alice/x", False, False, progress=lambda *a, **k: None)
    assert (output / "model.safetensors").is_file() and not handlers._uploads
    assert not (tmp_path / "work" / "other" / "merged-0").exists()


def test_a_merge_during_a_real_push_leaves_what_the_push_reads(hub_models, local_hub, tmp_path, monkeypatch):
    """The push reads the output through links in a folder beside it; the page's new merge forgot everything
    in the page's folder but the output, those links too, and the push failed on files gone."""
    import gradio as gr
    from huggingface_hub import CommitOperationAdd

    from hubmerge import engine
    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work")
    output = tmp_path / "work" / "default" / "merged-1"
    engine.merge(hub_models.recipe(), output)
    b64content = CommitOperationAdd.b64content
    merged_again = []

    def the_page_merges_again(self):  # type: ignore[no-untyped-def]
        if not merged_again:
            merged_again.append(True)
            with pytest.raises(gr.Error):  # refused at once (no model given), after forgetting the page's outputs
                handlers.merge("", [], "simple_average", {}, "", "cpu", progress=lambda *a, **k: None)
        return b64content(self)

    monkeypatch.setattr(CommitOperationAdd, "b64content", the_page_merges_again)
    repo_id = f"alice/ui-push-{os.getpid()}-{time.monotonic_ns()}"
    pushed = handlers.push(str(output), repo_id, False, False, local_hub.alice_token, progress=lambda *a, **k: None)
    assert merged_again and pushed.startswith("Pushed 1")
    assert "model.safetensors" in HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).list_repo_files(repo_id)
    assert not output.exists()  # forgotten by its page during the push: the push deleted it at its end


@pytest.mark.slow
def test_progress_reaches_the_page_from_the_merges_reader_threads(hub_models, local_hub, tmp_path):
    """gr.Progress finds its event through context variables: called from the engine's reader threads, which
    have none, it did nothing, and the page said "Planning from headers" through the whole merge."""
    import contextvars

    from gradio.context import LocalContext

    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work", max_samples=70)  # 2 batches
    values = form_values(hub_models.recipe())
    form = (values.base_model, values.models, values.method, values.parameters, values.dtype, values.device)
    shown = []
    session = SimpleNamespace(session_hash="s")
    newer = threading.Event()

    def progress(value, desc=None, **kwargs):  # as gr.Progress: a call outside the event's context is lost
        if LocalContext.event_id.get(None) == "event":
            shown.append(desc)
            counts.append((value, kwargs.get("unit")))
        handlers._cancels["s"] = newer  # a second merge of this page starts meanwhile

    def in_the_event():
        LocalContext.event_id.set("event")
        return handlers.merge(*form, request=session, progress=progress)

    counts: list = []
    contextvars.copy_context().run(in_the_event)
    assert shown[0] == "Planning from headers" and "Merging" in shown
    assert "Merged: evaluating and writing the card" in shown
    # then the evaluation, the long part at FusionBench's scale: each task's pass in images, done of all
    # (the page said "Merged: evaluating and writing the card" on a full bar through all of it)
    evaluating = [(desc, value) for desc, (value, unit) in zip(shown, counts) if unit == "images"]
    tasks = [row[1] for row in values.models]
    assert [desc.split(" (")[0] for desc, _ in evaluating[::3]] == [f"Evaluating {task}" for task in tasks]
    assert [value for _, value in evaluating] == [(0, 70), (64, 70), (70, 70)] * len(tasks)
    assert all(re.search(r"\): about \d+ s left$", desc) for desc, _ in evaluating[1::3])  # from the first batch's rate
    # before each pass, its loads (a dataset, six models: downloads on the Hub) say so, on an empty bar: the page
    # kept the merge's full bar, or the last pass's, through them
    loading = [(desc, value) for desc, (value, unit) in zip(shown, counts) if desc.startswith("Loading ")]
    assert (f"Loading ft:{tasks[-1]} for {tasks[0]}", 0) in loading and all(value == 0 for _, value in loading)
    assert shown.index(evaluating[0][0]) < shown.index(f"Loading merged for {tasks[1]}") < shown.index(evaluating[3][0])
    assert handlers._cancels == {"s": newer}  # its Cancel still reaches it
    assert handlers.cancel(session) == "Cancelled: nothing was written." and newer.is_set()


def _hub_merge_form(hub_models, local_hub, tmp_path):
    """An app on the local Hub evaluating 16 examples per task, the demo recipe's form, and one page."""
    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work", max_samples=16)
    values = form_values(hub_models.recipe())
    form = (values.base_model, values.models, values.method, values.parameters, values.dtype, values.device)
    return handlers, form, SimpleNamespace(session_hash="s")


@pytest.mark.slow
def test_cancel_during_the_evaluation_stops_it_and_leaves_nothing(hub_models, local_hub, tmp_path, monkeypatch):
    """Cancel said "nothing was written" while the evaluation went on and wrote its reports and card."""
    import gradio as gr

    from hubmerge.evaluation import loop

    handlers, form, session = _hub_merge_form(hub_models, local_hub, tmp_path)
    prepare = loop._prepare
    passes = []

    def cancelled_as_it_starts(*args, **kwargs):  # the user presses Cancel once the evaluation runs
        passes.append(args[0].task)
        handlers.cancel(session)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(loop, "_prepare", cancelled_as_it_starts)
    with pytest.raises(gr.Error, match="the evaluation was cancelled"):
        handlers.merge(*form, request=session, progress=lambda *a, **k: None)
    assert len(set(passes)) == 1  # the first task's pass stopped at its first batch: no other task's ran
    assert list((tmp_path / "work").rglob("*")) == [tmp_path / "work" / "s"] and handlers._cancels == {}


@pytest.mark.slow
def test_cancel_during_the_last_batch_or_the_card_leaves_nothing(hub_models, local_hub, tmp_path, monkeypatch):
    """The evaluation looks at Cancel before each model's batch: pressed during the last one (a minute through a
    ConvNeXt-base on a CPU) or the card, the page said "Cancelled: nothing was written" while the merge went on
    to write its reports and card, and the whole output stayed on disk with no page to show or push it."""
    import gradio as gr

    from hubmerge import publish

    handlers, form, session = _hub_merge_form(hub_models, local_hub, tmp_path)
    write_card = publish.write_card

    def cancelled_during_the_card(*args, **kwargs):  # after the evaluation's last look at Cancel
        assert handlers.cancel(session) == "Cancelled: nothing was written."
        return write_card(*args, **kwargs)

    monkeypatch.setattr(publish, "write_card", cancelled_during_the_card)
    with pytest.raises(gr.Error, match="was cancelled"):
        handlers.merge(*form, request=session, progress=lambda *a, **k: None)
    assert list((tmp_path / "work").rglob("*")) == [tmp_path / "work" / "s"] and handlers._cancels == {}


@pytest.mark.slow
def test_an_output_whose_inputs_name_no_task_is_tried_with_its_roots_head(hub_models, local_hub, tmp_path):
    """The models table left without tasks (as a mergekit user would): "Try it" offered no task to pick."""
    from hubmerge.ui import AppHandlers
    from hubmerge.ui.app import ROOT_HEAD

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work", max_samples=16)
    values = form_values(hub_models.recipe())
    first_task = values.models[0][1]
    untasked = [[model, "", "", weight] for model, _, _, weight, *_ in values.models]
    quiet = {"request": SimpleNamespace(session_hash="s"), "progress": lambda *a, **k: None}
    status, *_, output, tasks = handlers.merge(values.base_model, untasked, values.method, values.parameters,
                                               values.dtype, values.device, **quiet)
    assert "no task heads (no input named a task): its root keeps the first input's head" in status
    assert tasks["choices"] == [ROOT_HEAD] and tasks["value"] == ROOT_HEAD
    hits = 0
    for index in range(5):
        image, truth = _digit_image(first_task, index)
        top = handlers.try_it(output, ROOT_HEAD, Image.open(image["path"]))
        hits += max(top, key=top.get) == truth
    assert hits >= 4  # the merged backbone with the first input's head


@pytest.mark.slow
def test_each_merge_chooses_how_many_examples_to_evaluate(hub_models, local_hub, tmp_path):
    from hubmerge.ui import AppHandlers

    os.environ.pop("HF_HUB_OFFLINE", None)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work", max_samples=16)
    values = form_values(hub_models.recipe())
    form = (values.base_model, values.models, values.method, values.parameters, values.dtype, values.device, "")
    quiet = {"request": SimpleNamespace(session_hash="s"), "progress": lambda *a, **k: None}
    assert "digits_low 16 of 218" in handlers.merge(*form, **quiet)[0]  # the app's starting value
    assert "digits_low 5 of 218" in handlers.merge(*form, 5, **quiet)[0]
    whole = handlers.merge(*form, 0, **quiet)
    assert "random subset" not in whole[0] and "(all 218 examples)" in whole[3]  # status, then the card


@pytest.mark.slow
def test_a_merge_can_match_classes_by_position(hub_models, local_hub, tmp_path, monkeypatch):
    """A Hub dataset naming its classes otherwise than the head: the app's merge fails by name, saying how,
    and evaluates with "position" chosen on the form."""
    import uuid

    import gradio as gr

    from hubmerge.ui import AppHandlers

    from ._eval_helpers import hf_online, upload_dataset, variant

    os.environ.pop("HF_HUB_OFFLINE", None)
    hf_online(monkeypatch, True)
    renamed = variant(hub_models.datasets["digits_low"], tmp_path / "renamed", names=[f"digit {n}" for n in range(5)])
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo = upload_dataset(api, f"alice/ui-renamed-{uuid.uuid4().hex[:8]}", renamed, tmp_path / "up")
    values = form_values(hub_models.recipe())
    rows = [[model, task, repo if task == "digits_low" else data, weight]
            for model, task, data, weight, *_ in values.models]
    form = (values.base_model, rows, values.method, values.parameters, values.dtype, values.device, "", 8)
    handlers = AppHandlers(endpoint=local_hub.endpoint, work_dir=tmp_path / "work")
    quiet = {"request": SimpleNamespace(session_hash="s"), "progress": lambda *a, **k: None}
    with pytest.raises(gr.Error, match="web app: match classes by position"):
        handlers.merge(*form, **quiet)
    status, table = handlers.merge(*form, "position", **quiet)[:2]
    assert "digits_low 8 of 218" in status and len(table) == 3 + len(rows)  # merged, base, individual, each input


@pytest.mark.filterwarnings("ignore:Gradio does not support OAuth features outside of a Space")
def test_the_form_starts_from_the_apps_sample_count(local_hub, monkeypatch):
    from hubmerge.ui import build_app
    from hubmerge.ui.app import SPACE_EXAMPLES

    def examples_field(app) -> dict:
        return next(c for c in app.config["components"] if c.get("props", {}).get("elem_id") == "examples")["props"]

    assert examples_field(build_app(max_samples=48))["value"] == 48
    assert examples_field(build_app())["value"] == 0  # locally: the whole split
    monkeypatch.setenv("SPACE_ID", "alice/hubmerge")  # a CPU Space would take hours over whole splits
    monkeypatch.setenv("HF_TOKEN", local_hub.alice_token)  # Gradio's sign-in button, outside a Space, asks whoami
    assert examples_field(build_app())["value"] == SPACE_EXAMPLES


def test_a_push_does_not_wait_behind_other_visitors_merges():
    """Merges and pushes shared one queue slot: a push (even one refused at once for having nothing merged)
    waited behind every merge queued before it, hours on a CPU Space."""
    from hubmerge.ui import build_app

    app = build_app()
    events = {fn.api_name: fn for fn in (app.fns.values() if isinstance(app.fns, dict) else app.fns)}
    assert events["merge"].concurrency_limit == events["push"].concurrency_limit == 1
    assert events["merge"].concurrency_id != events["push"].concurrency_id


def test_try_its_labels_go_with_the_model_task_or_image_they_were_for():
    """After a new merge (of other models, other tasks) "Try it" still showed the last model's top-5 labels."""
    from hubmerge.ui import build_app

    config = build_app().config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    image = next(c["id"] for c in config["components"] if c.get("type") == "image")
    clearing = [d for d in config["dependencies"] if ids["top5"] in d["outputs"] and d["api_name"] != "try_it"]
    assert any(ids["results"] in d["outputs"] for d in clearing)  # the merge's clearing step
    assert {(ids["task"], "change"), (image, "change")} <= {tuple(t) for d in clearing for t in d["targets"]}


@pytest.mark.filterwarnings("ignore:Gradio does not support OAuth features outside of a Space")
@pytest.mark.parametrize("space", [False, True])
def test_push_and_classify_are_off_until_the_page_has_a_merged_output(space, local_hub, monkeypatch, tmp_path):
    """Push and Classify were on before any merge (and during one, after a failed or cancelled one) and could only
    answer "merge first". They start off and follow the page's output, read on the server, as on a Space."""
    from hubmerge.ui import build_app

    if space:
        monkeypatch.setenv("SPACE_ID", "alice/hubmerge")
        monkeypatch.setenv("HF_TOKEN", local_hub.alice_token)  # Gradio's sign-in button, outside a Space, asks whoami
    app = build_app()
    config = app.config
    ids = _elem_ids(config)
    buttons = [ids["push"], ids["classify"]]
    assert [c["props"]["interactive"] for c in config["components"] if c["id"] in buttons] == [False, False]

    fns, deps = _events(app)
    steps = [i for i, fn in enumerate(fns) if [c._id for c in fn.outputs][:2] == buttons and len(fn.outputs) == 3]
    after = [fns[deps[i]["trigger_after"]] for i in steps if deps[i]["trigger_after"] is not None]
    state = next(fn for fn in fns if fn.api_name == "push").inputs[0]._id  # the page's output
    public = ["merge", "push", "push"]  # after a merge; after a push, done or refused
    assert sorted(fn.api_name for fn in after if fn.api_name in public) == public
    # and as a merge starts, after the step that clears the page's output
    assert [state in [c._id for c in fn.outputs] for fn in after if fn.api_name not in public] == [True]
    assert all(deps[i]["trigger_after"] is not None for i in steps)  # the image sets Classify alone
    output = tmp_path / "merged-1234"
    picture = {"path": str(tmp_path / "digit.png"), "meta": {"_type": "gradio.FileData"}}  # an image as sent
    for value, given, push, classify in ((None, None, False, False), ("", picture, False, False),
                                         (str(output), picture, False, False), (str(tmp_path), None, True, False),
                                         (str(tmp_path), picture, True, True)):
        for step in steps:  # Classify once given an image too: it could only answer "upload an image first"
            updates = fns[step].fn(value, given)
            assert [u.interactive for u in updates[:2]] + [updates[2].active] == [push, classify, push], (value, step)
        assert fns[steps[0]].preprocess is False  # the image as sent: no decoding of a photo at each step


@pytest.mark.filterwarnings("ignore:Gradio does not support OAuth features outside of a Space")
@pytest.mark.parametrize("space", [False, True])
def test_push_stays_off_during_its_push_whatever_else_the_page_does(space, local_hub, monkeypatch, tmp_path):
    """Push is off from its click until its push ends, but an image given or taken away, or a refused Classify,
    turned it on during the upload (their step set Push by the output alone). They leave Push as it stands, and
    Classify follows the image; a refused Classify turns both off only where the output went."""
    from hubmerge.ui import build_app

    if space:
        monkeypatch.setenv("SPACE_ID", "alice/hubmerge")
        monkeypatch.setenv("HF_TOKEN", local_hub.alice_token)  # Gradio's sign-in button, outside a Space, asks whoami
    app = build_app(work_dir=tmp_path / "work")
    ids = _elem_ids(app.config)
    image = next(c["id"] for c in app.config["components"] if c.get("type") == "image")
    fns, deps = _events(app)
    try_it = next(i for i, fn in enumerate(fns) if fn.api_name == "try_it")
    after_try = [i for i, d in enumerate(deps) if d["trigger_after"] == try_it]
    on_image = [i for i, d in enumerate(deps) if (image, "change") in d["targets"] and ids["classify"] in d["outputs"]]
    assert len(after_try) == 1 and len(on_image) == 1
    assert ids["push"] not in deps[on_image[0]]["outputs"]
    output = tmp_path / "work" / "page" / "merged-1234"
    output.mkdir(parents=True)
    picture = {"path": str(tmp_path / "digit.png"), "meta": {"_type": "gradio.FileData"}}  # an image as sent
    for given, on in ((picture, True), (None, False)):
        assert fns[on_image[0]].fn(str(output), given).interactive is on
        assert fns[on_image[0]].fn(None, given).interactive is False
    assert fns[after_try[0]].fn(str(output)) == {"__type__": "update"}  # a push may be running: nothing changes
    state, _, push, classify, _ = fns[after_try[0]].fn(str(tmp_path / "work" / "page" / "merged-gone"))
    assert state is None and (push.interactive, classify.interactive) == (False, False)


def _elem_ids(config: dict) -> dict[str, int]:
    return {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}


def _events(app) -> tuple[list, list[dict]]:
    """The app's event steps and their wiring (``trigger_after``: the step each follows), in the same order."""
    return list(app.fns.values() if isinstance(app.fns, dict) else app.fns), app.config["dependencies"]


def test_push_is_off_from_its_click_until_its_push_ends():
    """Clicked again during an upload, Push started a second push of the same model (only the step clearing the
    last answer ran at the click). Its first step turns it off; it comes back after the push, done or refused."""
    from hubmerge.ui import build_app

    app = build_app()
    ids = _elem_ids(app.config)
    fns, deps = _events(app)
    push = next(i for i, fn in enumerate(fns) if fn.api_name == "push")
    click = deps[push]["trigger_after"]
    assert deps[click]["targets"] == [(ids["push"], "click")] and deps[click]["trigger_after"] is None
    assert [c.elem_id for c in fns[click].outputs] == ["pushed", "push"]
    assert fns[click].fn()[1].interactive is False and fns[click].queue is False  # at once, in the page
    back = [(d["trigger_only_on_success"], d["trigger_only_on_failure"]) for d in deps if d["trigger_after"] == push]
    assert sorted(back) == [(False, False), (False, True)]  # Gradio's .then does not follow a failure


def test_push_stays_off_while_any_push_of_the_page_waits_or_uploads(tmp_path):
    """A merge ending during the upload of the page's older output turned Push on for the new one, and the older
    push's end turned it on again while a second click's push waited in the queue: the new output pushed twice.
    Push is on only once every push the page clicked has answered, done or refused; other pages' pushes count not."""
    from hubmerge.ui import build_app

    app = build_app(work_dir=tmp_path / "work")
    ids = _elem_ids(app.config)
    fns, deps = _events(app)
    push = next(i for i, fn in enumerate(fns) if fn.api_name == "push")
    merge = next(i for i, fn in enumerate(fns) if fn.api_name == "merge")
    click = fns[deps[push]["trigger_after"]].fn
    answered = [fns[i].fn for i, d in enumerate(deps) if d["trigger_after"] == push]
    merged = next(fns[i].fn for i, d in enumerate(deps)
                  if d["trigger_after"] == merge and ids["push"] in d["outputs"] and ids["classify"] in d["outputs"])
    page, other = SimpleNamespace(session_hash="page"), SimpleNamespace(session_hash="other")
    output = tmp_path / "work" / "page" / "merged-2"
    output.mkdir(parents=True)

    def push_on(step, request) -> bool:  # type: ignore[no-untyped-def]
        return step(str(output), None, request=request)[0].interactive

    assert push_on(merged, page) is True  # no push of the page
    assert click(request=page)[1].interactive is False  # the older output's push
    assert push_on(merged, page) is False and push_on(merged, other) is True  # the merge ends during it
    click(request=page)  # (a second push clicked before the fix)
    assert push_on(answered[0], page) is False  # the first push answered: the second still waits
    assert push_on(answered[1], page) is True  # it answered, refused: nothing of the page pushes now
    assert push_on(answered[0], page) is True  # a stray answer counts no lower
    click(request=page)
    handlers = fns[push].fn.__self__
    handlers.end_session(page)  # the page closed: its count goes with it
    assert not handlers._pushes


def test_a_push_of_an_output_a_push_is_uploading_is_refused(tmp_path, monkeypatch):
    """The API reaches the push handler however the page's button stands: a second push of the output a push is
    uploading committed it again. Another output pushes meanwhile, and the output again once its push ended."""
    import gradio as gr

    from hubmerge import publish as publishing
    from hubmerge.ui import AppHandlers

    handlers = AppHandlers(work_dir=tmp_path / "work", default_token="hf_testtoken")
    output, other = tmp_path / "work" / "page" / "merged-1", tmp_path / "work" / "other" / "merged-2"
    quiet = {"progress": lambda *a, **k: None}
    pushes: list[str] = []

    def publish_output(path, repo_id, **kwargs):
        pushes.append(repo_id)
        if len(pushes) == 1:  # during the first push
            with pytest.raises(gr.Error, match="this merged model is being pushed already: its push's answer comes"):
                handlers.push(str(output), "alice/again", False, True, **quiet)
            assert handlers.push(str(other), "alice/other", False, False, **quiet).startswith("Pushed")
        return SimpleNamespace(files=["model.safetensors"], commit_sha="0" * 40, url=f"http://hub/{repo_id}")

    monkeypatch.setattr(publishing, "publish_output", publish_output)
    for folder in (output, other):
        folder.mkdir(parents=True)
    assert handlers.push(str(output), "alice/x", False, False, **quiet).startswith("Pushed")
    assert pushes == ["alice/x", "alice/other"] and not handlers._uploads
    assert handlers.push(str(output), "alice/x", False, True, **quiet).startswith("Pushed")


@pytest.mark.filterwarnings("ignore:Gradio does not support OAuth features outside of a Space")
@pytest.mark.parametrize("space", [False, True])
def test_the_page_says_at_once_that_its_output_was_deleted(space, local_hub, monkeypatch, tmp_path):
    """An output deleted by the cleanup (keep_outputs_s) was noticed only at the next click. While the page holds one,
    a timer looks every OUTPUT_CHECK_S on the server (also on a Space); once it is gone, the page says so with the
    actions' own words, forgets it and turns them off; else the step changes nothing (a push running keeps Push off)."""
    from hubmerge.ui import build_app
    from hubmerge.ui.app import OUTPUT_CHECK_S

    if space:
        monkeypatch.setenv("SPACE_ID", "alice/hubmerge")
        monkeypatch.setenv("HF_TOKEN", local_hub.alice_token)  # Gradio's sign-in button, outside a Space, asks whoami
    app = build_app(work_dir=tmp_path)
    ids = _elem_ids(app.config)
    timer = next(c for c in app.config["components"] if c.get("type") == "timer")
    assert (timer["props"]["value"], timer["props"]["active"]) == (OUTPUT_CHECK_S, False) and OUTPUT_CHECK_S <= 60
    fns, deps = _events(app)
    (tick,) = [i for i, d in enumerate(deps) if d["targets"] == [(timer["id"], "tick")]]
    assert [c.elem_id for c in fns[tick].outputs[1:4]] == ["notice", "push", "classify"] and fns[tick].queue is False
    handlers = next(fn for fn in fns if fn.api_name == "push").fn.__self__
    for there in (None, str(tmp_path)):
        assert fns[tick].fn(there) == {"__type__": "update"}  # nothing changes
    state, notice, push, classify, checks = fns[tick].fn(str(tmp_path / "s" / "merged-1234"))
    assert state is None and notice == ("**This session's merged model was deleted: the app keeps one for 60 "
                                        "minutes after its merge, until the session's next merge; merge again to try "
                                        "or push it.**")
    assert notice[3:-3] == handlers.output_gone[1:]
    assert (push.interactive, classify.interactive, checks.active) == (False, False, False)
    clearing = next(d for d in deps if ids["results"] in d["outputs"] and d["api_name"] != "merge")
    assert ids["notice"] in clearing["outputs"]  # the next merge takes the line away


def test_the_models_table_says_every_method_that_uses_a_weight():
    """It said "weight (weighted_average)", so a task_arithmetic or ties user never learned they could weigh models."""
    from hubmerge.methods import list_methods
    from hubmerge.ui import build_app

    table = next(c for c in build_app().config["components"] if c.get("props", {}).get("elem_id") == "models")
    weighing = [m.name for m in list_methods() if m.uses_weights]
    assert {"weighted_average", "task_arithmetic", "ties"} <= set(weighing)
    assert f"weight (used by {', '.join(weighing)})" in table["props"]["label"]


@pytest.mark.slow
def test_a_stopped_app_leaves_no_cached_copies(hub_models, local_hub, tmp_path, monkeypatch):
    from gradio_client import Client

    os.environ.pop("HF_HUB_OFFLINE", None)
    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # read as the app's components are made
    with running_app(local_hub.endpoint, hub_models, tmp_path / "work") as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        recipe_file = client.predict(*_form(hub_models), "", api_name="/merge")[4]
        assert Path(recipe_file).name == "hubmerge_recipe.yaml"
        assert [p.name for p in cache.rglob("*") if p.is_file()] == ["hubmerge_recipe.yaml"]  # gradio's copy
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_the_models_table_arrives_in_any_of_its_shapes():
    import pandas as pd

    from hubmerge.ui import AppHandlers

    rows = [["org/a", "x", "", ""], ["org/b", "y", "", ""]]
    expected = [str(e.model) for e in AppHandlers().recipe("org/base", rows, "simple_average", {}, AS_INPUTS,
                                                           "cpu").models]
    for table in (pd.DataFrame(rows, columns=["model", "task", "dataset", "weight"]),
                  {"headers": ["model", "task", "dataset", "weight"], "data": rows}):
        recipe = AppHandlers().recipe("org/base", table, "simple_average", {}, AS_INPUTS, "cpu")
        assert [str(e.model) for e in recipe.models] == expected == ["org/a", "org/b"]


@pytest.mark.parametrize(("done", "elapsed", "line"), [
    (0, 0.0, "Evaluating sun397 (merged, base)"),  # nothing to tell a rate by yet
    (64, 30.0, "Evaluating sun397 (merged, base): about 9 min left"),  # 1136 images at 64 per 30 s
    (640, 30.0, "Evaluating sun397 (merged, base): about 26 s left"),
    (600, 80.0, "Evaluating sun397 (merged, base): about 80 s left"),  # seconds up to a minute and a half
    (0, 5.0, "Evaluating sun397 (merged, base)"),  # no batch done yet: no rate, not a division by 0
    (64, 600.0, "Evaluating sun397 (merged, base): about 3.0 h left"),
    (1200, 600.0, "Evaluating sun397 (merged, base)"),  # done
])
def test_the_pages_evaluation_line_says_the_time_left(done: int, elapsed: float, line: str) -> None:
    """gradio's bar shows the images done of all but no time left: an evaluation of hours on a CPU Space said
    how far it was, never how long it would still take."""
    from hubmerge.ui.app import evaluation_step

    assert evaluation_step("evaluating sun397 (merged, base)", done, 1200, elapsed) == line


def test_launch_app_serves_the_page_with_its_styles(monkeypatch, tmp_path):
    """The styles are launch()'s since Gradio 6, not the Blocks': launch_app must hand them over, or the card's
    tables break their numbers on a phone again (test_ui_browser checks what the styles do)."""
    from hubmerge.ui import app as ui_app

    launched: dict[str, object] = {}
    monkeypatch.setattr(ui_app, "build_app", lambda **_: SimpleNamespace(launch=launched.update))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "g"))
    ui_app.launch_app(host="127.0.0.1")
    assert launched["css"] == ui_app.CSS and "#card td" in ui_app.CSS
