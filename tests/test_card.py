"""The model card: metadata the Hub reads, a body people read, code samples that work."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import load_file

import hubmerge
from hubmerge import engine
from hubmerge.card import CardFacts, card_is_edited, collect_card, render_card, write_card
from hubmerge.cli import main
from hubmerge.errors import CardEditedError, RecipeError
from hubmerge.published import scope_datasets
from hubmerge.recipe import DatasetRef, ModelRef, Recipe, load_recipe

from ._models import cache_snapshot, make_family, write_recipe


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family"), "convnext")


def merged(tmp_path, family, *, licenses=("mit", "mit", "mit", "mit"), results=True, no_dataset=()):
    for path, license_ in zip([family.base, *family.models.values()], licenses):
        (path / "README.md").write_text(f"---\nlicense: {license_}\n---\n# model\n" if license_ else "# no card data\n")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "ties", extra={
        "models": [{"model": str(p), "task": t, **({} if t in no_dataset else {"dataset": f"org/{t}-data"})}
                   for t, p in family.models.items()]
    }))
    out = tmp_path / "out"
    engine.merge(recipe, out)
    if results:
        report = {t: {"accuracy": 0.5 + i / 10, "loss": 1.0} for i, t in enumerate(family.models)}
        report["average"] = {"accuracy": 0.6, "loss": 1.0}
        (out / "eval_results.json").write_text(json.dumps(report))
        comparison = {"merged": report, "base": {t: {"accuracy": 0.2, "loss": 2.0} for t in family.models},
                      "individual": {t: {"accuracy": 0.9, "loss": 0.1} for t in family.models}, "finetuned": {}}
        (out / "eval_comparison.json").write_text(json.dumps(comparison))
    return out


def test_metadata(tmp_path, family):
    out = merged(tmp_path, family)
    card = ModelCard.load(write_card(out, repo_id="alice/merged"))
    data = card.data.to_dict()
    assert data["base_model_relation"] == "merge"
    assert "base_model" not in data  # local inputs are not Hub repos
    assert data["pipeline_tag"] == "image-classification" and data["library_name"] == "transformers"
    assert {"hubmerge", "merge", "ties"} <= set(data["tags"])
    assert data["license"] == "mit"
    assert sorted(data["datasets"]) == sorted(f"org/{t}-data" for t in family.models)
    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == "merged"
    accuracy = {r.dataset_name: r.metric_value for r in results}
    assert accuracy == {t: pytest.approx(0.5 + i / 10) for i, t in enumerate(family.models)}
    assert all(r.task_type == "image-classification" and r.metric_type == "accuracy" for r in results)


def test_local_datasets_stay_out_of_the_metadata(tmp_path, family):
    """The card's ``datasets:`` names Hub datasets: a local one would publish this machine's path, which is no
    dataset id the Hub can link (nor anyone's business)."""
    local = tmp_path / "my-data"
    local.mkdir()
    first, *rest = family.models
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "ties", extra={"models": [
        {"model": str(family.models[first]), "task": first, "dataset": str(local)},
        *({"model": str(family.models[t]), "task": t, "dataset": f"org/{t}-data"} for t in rest)]}))
    engine.merge(recipe, tmp_path / "out")
    data = ModelCard.load(write_card(tmp_path / "out")).data.to_dict()
    assert sorted(data["datasets"]) == sorted(f"org/{t}-data" for t in rest)
    assert str(tmp_path) not in json.dumps(data)


def test_an_output_file_holding_no_json_object_is_said_in_words(tmp_path, family, capsys, local_hub):
    """An eval_scope.json (or index, report, config) edited into a list was an "unexpected error:
    AttributeError" from `card` and from `push`: the file is named instead, and nothing is pushed."""
    out = merged(tmp_path, family)
    for name in ("eval_scope.json", "eval_results.json", "hubmerge_heads.json", "config.json"):
        kept = (out / name).read_text() if (out / name).exists() else None
        (out / name).write_text("[1, 2]")
        push = ["push", str(out), "--repo-id", "alice/never-made", "--token", local_hub.alice_token]
        for command in (["card", str(out)], push):
            assert main(command) == 1
            err = " ".join(capsys.readouterr().err.split())
            assert f"{name} is not a JSON object (it holds a list)" in err and "unexpected" not in err, (name, err)
        if kept is None:
            (out / name).unlink()
        else:
            (out / name).write_text(kept)
    assert not HfApi(endpoint=local_hub.endpoint).repo_exists("alice/never-made", token=local_hub.alice_token)


def test_an_output_file_nested_past_parsing_is_said_in_words(tmp_path, family, capsys):
    """A report or index nested 100,000 levels deep (kilobytes, within any size cap) was an "unexpected
    error: RecursionError" from `card`; every JSON reader names the file instead."""
    out = merged(tmp_path, family)
    deep = "[" * 100_000 + "]" * 100_000
    for name in ("eval_results.json", "hubmerge_heads.json", "config.json"):
        kept = (out / name).read_text()
        (out / name).write_text(deep)
        assert main(["card", str(out)]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "unexpected error" not in err and "is nested too deeply to be read" in err, (name, err)
        (out / name).write_text(kept)
    report = tmp_path / "report.json"  # `evaluate --json` over it: no report, so not written over
    report.write_text(deep)
    assert main(["evaluate", str(out), "--json", str(report)]) == 2
    assert "is no JSON report" in capsys.readouterr().err


def test_writers_of_one_card_at_once_each_replace_it_whole(tmp_path, family):
    """Two pushes of one output (or two sessions of the web app) write its card at once: with one fixed
    temporary name, one renamed the other's away and failed with FileNotFoundError."""
    import threading

    out = merged(tmp_path, family)
    errors = []

    def write(repo_id):
        for _ in range(15):
            try:
                write_card(out, repo_id=repo_id, overwrite=True)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))

    threads = [threading.Thread(target=write, args=(f"alice/r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not card_is_edited(out) and [p.name for p in out.glob(".README.md*")] == []


def test_body(tmp_path, family):
    out = merged(tmp_path, family)
    text = str(render_card(collect_card(out, repo_id="alice/merged")))
    assert "TIES-Merging" in text and "density=0.2" in text and "arxiv.org/abs/2306.01708" in text
    assert f"by merging\n{len(family.models)} fine-tuned models and their base with **TIES-Merging**" in text
    assert "| **merged** |" in text and "| base + task heads |" in text and "| individual fine-tunes |" in text
    assert "compare the merged row with the individual fine-tunes above" in text
    for task in family.models:
        assert "heads/<task>/" in text and task in text
    assert "hubmerge merge hubmerge_recipe.yaml" in text and "method: ties" in text
    assert f"with hubmerge {hubmerge.__version__}, the version that made this model" in text
    assert 'load_merged("alice/merged"' in text


def test_inputs_read_from_a_hugging_face_cache_are_named_by_their_hub_repos(tmp_path, family):
    """A recipe naming the paths `snapshot_download()` returns made a card whose inputs were `000...0` (local),
    with no base_model: nothing said which Hub models were merged."""
    commit = "1234abcd" * 5
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "ties", extra={
        "base_model": str(cache_snapshot(family.base, tmp_path / "cache", commit=commit)),
        "models": [{"model": str(cache_snapshot(path, tmp_path / "cache", commit=commit)), "task": task}
                   for task, path in family.models.items()]}))
    engine.merge(recipe, tmp_path / "out")
    card = render_card(collect_card(tmp_path / "out", endpoint="https://hub.example"))
    repos = [f"org/{path.name}" for path in [family.base, *family.models.values()]]
    assert card.data.to_dict()["base_model"] == repos
    for repo in repos:
        assert (f"| [{repo}](https://hub.example/{repo}) (local copy from the Hugging Face cache) | "
                in card.text)
    assert card.text.count(f"| {commit} |") == len(repos) and "(local) |" not in card.text
    assert "Some inputs were read from a Hugging Face cache" in card.text
    assert "Some inputs were local folders" not in card.text
    # its recipe names them by the part of their cache paths that reads back as the commit, not by this machine's
    assert f"base_model: ./models--org--{family.base.name}/snapshots/{commit}" in card.text
    assert str(tmp_path) not in card.text
    # on a Hub on this machine the links start at its root: its port changes when it is served again
    # (the demo's cards linked to the port of a server long gone)
    local = render_card(collect_card(tmp_path / "out", endpoint="http://127.0.0.1:36895"))
    assert f"| [{repos[0]}](/{repos[0]}) (local copy from the Hugging Face cache) | " in local.text
    assert "127.0.0.1" not in local.text


def test_a_merge_without_tasks_says_whose_head_the_root_keeps(tmp_path, family):
    """A mergekit-style recipe names no tasks: the card said the backbone "is shared by every task" and that
    the root "classifies for the default task, **-**"."""
    first, *_ = family.models.values()
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "ties", extra={
        "models": [{"model": str(path)} for path in family.models.values()]}))
    engine.merge(recipe, tmp_path / "out")
    text = str(render_card(collect_card(tmp_path / "out")))
    assert "shared by every task" not in text and "**-**" not in text and "heads/<task>/" not in text
    assert (f"No input named a task, so there are no per-task heads: the root keeps the classification head of "
            f"`{first.name}` (local), the first fine-tune") in text
    assert f"loads with plain transformers and classifies with the head of `{first.name}` (local):" in text
    # evaluated with `--task low=org/low --max-samples 10 --save`: a name no recipe entry has
    (tmp_path / "out" / "eval_results.json").write_text(json.dumps({"low": {"accuracy": 0.9, "loss": 0.3},
                                                                    "average": {"accuracy": 0.9, "loss": 0.3}}))
    (tmp_path / "out" / "eval_scope.json").write_text(json.dumps({"low": {"dataset": "org/low:test", "samples": 10,
                                                                          "split_size": 100}}))
    card = render_card(collect_card(tmp_path / "out"))
    assert "low on org/low:test (10 of 100 examples, a random subset)" in card.text
    assert "fixed random subset of each evaluation split" in card.text
    assert [r.dataset_type for r in model_index_to_eval_results(card.data.to_dict()["model-index"])[1]] == ["org/low"]
    row = {"low": {"accuracy": 0.8, "loss": 0.5}, "average": {"accuracy": 0.8, "loss": 0.5}}
    (tmp_path / "out" / "eval_comparison.json").write_text(json.dumps(  # --compare-inputs: no diagonal to show
        {"merged": row, "base": row, "finetuned": {"a": row}, "individual": {}}))
    text = render_card(collect_card(tmp_path / "out")).text
    assert "| base + task heads | 80.0 | 80.0 |" in text and "| individual fine-tunes |" not in text


def test_license_only_when_the_inputs_agree(tmp_path, family):
    out = merged(tmp_path, family, licenses=("mit", "apache-2.0", None, "mit"))
    card = render_card(collect_card(out))
    assert card.data.to_dict().get("license") is None
    assert "different licenses" in card.text


def test_inputs_that_declare_no_license_give_the_card_none(tmp_path, family):
    """Cards without a ``license`` are no license, not one called 'None' that the inputs would agree on."""
    card = render_card(collect_card(merged(tmp_path, family, licenses=(None, None, None, None))))
    assert card.data.to_dict().get("license") is None and "None" not in card.text
    assert "different licenses" not in card.text


def test_two_licenses_that_differ_are_flagged_too(tmp_path, family):
    out = merged(tmp_path, family, licenses=("mit", "apache-2.0", "mit", "mit"))
    card = render_card(collect_card(out))
    assert card.data.to_dict().get("license") is None
    assert "The inputs declare different licenses" in card.text


def test_other_licenses_are_told_apart_by_their_names(tmp_path, family):
    """``license: other`` is one of many licenses, named by ``license_name``: inputs under two such licenses
    made a card declaring ``license: other`` alone, as if they agreed, with neither name nor link."""
    out = merged(tmp_path, family)

    def declare(*names):
        for path, name in zip([family.base, *family.models.values()], names):
            (path / "README.md").write_text(f"---\nlicense: other\nlicense_name: {name}\n"
                                            f"license_link: https://example.com/{name}\n---\n# model\n")

    declare("llama2", "gemma", "llama2", "llama2")
    card = render_card(collect_card(out))
    assert "license" not in card.data.to_dict()
    assert "The inputs declare different licenses" in card.text and "other (gemma)" in card.text
    declare("llama2", "llama2", "llama2", "llama2")
    (family.base / "README.md").write_text("---\nlicense: other\nlicense_name: llama2\n"
                                           "license_link: https://example.org/LICENSE\n---\n# model\n")
    card = render_card(collect_card(out))  # one name, two texts: which one holds is for the user to check
    assert "license" not in card.data.to_dict()
    assert "other (llama2, https://example.org/LICENSE)" in card.text
    assert "other (llama2, https://example.com/llama2)" in card.text
    declare("llama2", "llama2", "llama2", "llama2")
    data = render_card(collect_card(out)).data.to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == ("other", "llama2",
                                                                            "https://example.com/llama2")


def test_the_results_table_has_one_column_per_task_and_one_average(tmp_path, family):
    out = merged(tmp_path, family)  # eval_results.json holds the tasks and their "average"
    lines = render_card(collect_card(out)).text.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert header == "| model | " + " | ".join(family.models) + " | average |"
    merged_row = next(line for line in lines if line.startswith("| **merged** |"))
    assert merged_row == "| **merged** | " + " | ".join(f"{50 + 10 * i:.1f}" for i in range(len(family.models))) + " | 60.0 |"


def test_a_torchvision_model_is_carded_as_a_pytorch_library():
    """The Hub picks its usage snippet by library_name: a torchvision ResNet is no transformers model."""
    recipe = Recipe.from_dict({"method": "simple_average", "models": ["org/a", "org/b"]})
    facts = CardFacts(recipe=recipe, tasks=(), default_task=None, model_type="torchvision-resnet")
    assert render_card(facts).data.to_dict()["library_name"] == "pytorch"
    assert render_card(CardFacts(recipe=recipe, tasks=(), default_task=None, model_type="convnext")).data.to_dict()[
        "library_name"] == "transformers"


def test_a_backbone_the_family_chose_is_named_like_one_the_recipe_chose(tmp_path, family):
    """A recipe without target_modules merges the family's backbone: the card names it all the same."""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "ties", target=False))
    engine.merge(recipe, tmp_path / "out")
    text = " ".join(render_card(collect_card(tmp_path / "out")).text.split())
    assert f"The backbone (`{family.backbone}`) is shared by every task" in text
    assert f"Merged tensors: those under `{family.backbone}`" in text


def test_the_card_says_what_each_accuracy_was_measured_on(tmp_path, family):
    out = merged(tmp_path, family)
    older = render_card(collect_card(out)).text  # an output from before eval_scope.json: nothing claimed
    assert "was measured on" not in older and "random subset" not in older
    first, *rest = family.models
    scope = {first: {"dataset": f"org/{first}-data:test", "samples": 100, "split_size": 1234}}
    scope |= {t: {"dataset": f"org/{t}-data:test", "samples": 50, "split_size": 50} for t in rest}
    (out / "eval_scope.json").write_text(json.dumps(scope))
    text = render_card(collect_card(out)).text
    assert f"{first} on org/{first}-data:test (100 of 1,234 examples, a random subset)" in text
    assert all(f"{t} on org/{t}-data:test (all 50 examples)" in text for t in rest)
    assert "fixed random subset of each evaluation split" in text  # and a limitation says what that means
    scope[first]["samples"] = 1234
    (out / "eval_scope.json").write_text(json.dumps(scope))
    text = render_card(collect_card(out)).text
    assert "(all 1,234 examples)" in text and "random subset" not in text


def test_the_card_names_the_dataset_each_accuracy_was_measured_on_not_the_recipes(tmp_path, family):
    """`evaluate OUTPUT --task NAME=DATASET:train --save`: the card said the recipe's test split, in its text
    and in its model-index."""
    out = merged(tmp_path, family)
    first, *rest = family.models
    scope = {t: {"dataset": f"org/{t}-data:test", "samples": 50, "split_size": 50} for t in rest}
    scope[first] = {"dataset": "org/other:cfg:train", "samples": 60, "split_size": 60}
    (out / "eval_scope.json").write_text(json.dumps(scope))
    card = render_card(collect_card(out))
    assert f"{first} on org/other:cfg:train (all 60 examples)" in card.text
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    where = {r.dataset_name: (r.dataset_type, r.dataset_config, r.dataset_split) for r in results}
    assert where[first] == ("org/other", "cfg", "train") and where[rest[0]] == (f"org/{rest[0]}-data", None, "test")
    # a local folder went into the published metadata as this machine's path
    local = tmp_path / "data" / "my-digits"
    scope[first] = {"dataset": f"{local}:test", "samples": 60, "split_size": 60}
    (out / "eval_scope.json").write_text(json.dumps(scope))
    card = render_card(collect_card(out))
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {r.dataset_name: r.dataset_type for r in results}[first] == "my-digits"
    assert str(tmp_path) not in str(card.data.to_dict())


def test_the_card_names_the_columns_each_accuracy_was_measured_with(tmp_path, family):
    """`evaluate --task NAME=DATASET --label-column C --save`: the card named the dataset alone, as if its usual
    columns had been read."""
    out = merged(tmp_path, family)
    first, second, *_ = family.models
    scope = {t: {"dataset": f"org/{t}-data:test", "samples": 50, "split_size": 50} for t in family.models}
    scope[first] |= {"label_column": "coarse_label"}  # the recipe's dataset, read with a column named
    scope[second] = {"dataset": "org/other:train", "samples": 60, "split_size": 60, "image_column": "img"}
    (out / "eval_scope.json").write_text(json.dumps(scope))
    text = " ".join(render_card(collect_card(out)).text.split())
    assert f"{first} on org/{first}-data:test, label column coarse_label (all 50 examples)" in text
    assert f"{second} on org/other:train, image column img (all 60 examples)" in text


def test_a_scope_entry_naming_no_columns_keeps_the_recipes():
    """Outputs from before eval_scope.json named the columns: their recipe's dataset was measured with its own."""
    own = DatasetRef("org/d", "cfg", "test", label_column="coarse_label")
    scope = {"older": {"dataset": "org/d/cfg:test"}, "named": {"dataset": "org/d:cfg:test", "image_column": "img"},
             "other": {"dataset": "org/e:test", "label_column": "y"}, "broken": {"dataset": "a::b"}}
    assert scope_datasets(scope, {"older": own, "named": own, "other": own}) == {
        "older": own, "named": DatasetRef("org/d", "cfg", "test", image_column="img"),
        "other": DatasetRef("org/e", label_column="y")}


def test_a_recipes_split_measured_with_no_column_named_is_said_so():
    """`evaluate --task NAME=DATASET --save` on the split the recipe names with a column: eval_scope.json named no
    column, as an older output's, so the card named the recipe's column, which the evaluation never read."""
    from hubmerge.evaluation import EvalReport, TaskResult

    own = DatasetRef("org/d", split="test", label_column="coarse_label")
    measured = TaskResult(0.5, 1.0, num_samples=10, dataset="org/d:test", split_size=10)
    scope = EvalReport("out", {"t": measured, "u": replace(measured, image_column="img")}).scope()
    assert scope["t"]["label_column"] is None and scope["u"]["image_column"] == "img"
    assert scope_datasets(json.loads(json.dumps(scope)), {"t": own, "u": own}) == {
        "t": DatasetRef("org/d"), "u": DatasetRef("org/d", image_column="img")}


def test_missing_results_are_said_with_the_reason(tmp_path, family):
    first, *rest = family.models
    out = merged(tmp_path, family, results=False, no_dataset=(first,))
    card = render_card(collect_card(out))  # merged without --evaluate
    assert f"No evaluation was run for: {', '.join(rest)} (the recipe names a dataset for them; " \
           "`hubmerge evaluate OUTPUT --save` evaluates them, then `hubmerge card OUTPUT`)" in card.text
    assert f"No evaluation was run for: {first} (the recipe names no dataset for them)" in card.text
    assert "model-index" not in card.data.to_dict()
    # model_name only names the model-index: with none it stayed in the metadata as a key the Hub has no use for
    assert "model_name" not in card.data.to_dict()
    assert "individual fine-tunes above" not in card.text  # there is no table above
    assert "`hubmerge evaluate MODEL --compare-inputs` puts it next to the individual fine-tunes" in card.text


def test_not_a_hubmerge_output(tmp_path):
    with pytest.raises(RecipeError, match="hubmerge_recipe.yaml"):
        collect_card(tmp_path)


def test_card_command_regenerates(tmp_path, family, capsys):
    out = merged(tmp_path, family)
    assert main(["card", str(out), "--repo-id", "alice/x"]) == 0
    assert (out / "README.md").read_text().startswith("---\n")
    assert str(out / "README.md") in capsys.readouterr().out


def test_a_card_edited_by_hand_is_never_replaced_unasked(tmp_path, family, capsys):
    out = merged(tmp_path, family)
    path = write_card(out)
    assert not card_is_edited(out) and ModelCard.load(path).data.base_model_relation == "merge"
    path.write_text(path.read_text().replace("## Limitations", "## Our notes\n\nTrained on Tuesdays.\n\n## Limitations"))
    assert card_is_edited(out)
    with pytest.raises(CardEditedError, match="edited by hand"):
        write_card(out, repo_id="alice/x")
    assert main(["card", str(out)]) == 1 and "--overwrite" in capsys.readouterr().err
    assert "Trained on Tuesdays" in path.read_text()
    assert main(["card", str(out), "--overwrite"]) == 0
    assert "Trained on Tuesdays" not in path.read_text() and not card_is_edited(out)
    path.write_text("# a card of my own\n")  # no signature at all: someone else's
    assert card_is_edited(out)


def test_the_samples_of_a_card_without_a_repo_run_on_the_folder(tmp_path, family):
    """`hubmerge card OUT` names no repo: its samples load "path/to/this/model", and the plain transformers one
    read the head with hf_hub_download, which refuses a folder (HFValidationError), so it ran for no path."""
    out = merged(tmp_path, family)
    text = ModelCard.load(write_card(out)).text
    samples = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(samples) == 3
    task = list(family.models)[-1]
    for sample in samples:
        scope: dict = {}
        exec(sample.replace("path/to/this/model", str(out)), scope)  # noqa: S102 - the card's own code
    head = load_file(family.models[task] / "model.safetensors")["classifier.weight"]
    assert torch.equal(scope["model"].classifier.weight, head)


def test_card_round_trips_through_the_hub_and_its_samples_work(tmp_path, family, local_hub):
    out = merged(tmp_path, family)
    repo_id = f"alice/card-{uuid.uuid4().hex[:6]}"
    write_card(out, repo_id=repo_id)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    api.create_repo(repo_id)
    api.upload_folder(folder_path=out, repo_id=repo_id)
    card = ModelCard.load(repo_id, token=local_hub.alice_token)
    assert card.data.base_model_relation == "merge"
    assert f"{local_hub.endpoint}" not in card.data.to_yaml()  # metadata names repos, not URLs

    # The card's samples, run as a reader copies them: the last is the "plain transformers" one.
    from transformers.utils import logging

    logging.set_verbosity_error()
    task = list(family.models)[-1]
    samples = re.findall(r"```python\n(.*?)```", card.text, re.DOTALL)
    assert len(samples) == 3
    for sample in samples:
        scope: dict = {}
        exec(sample, scope)  # noqa: S102 - the card's own code
    model = scope["model"]
    head = load_file(family.models[task] / "model.safetensors")["classifier.weight"]
    assert torch.equal(model.classifier.weight, head)
    labels = json.loads((family.models[task] / "config.json").read_text())["id2label"]
    assert {str(k): v for k, v in model.config.id2label.items()} == labels


def test_a_card_names_local_inputs_by_their_paths_below_their_common_parent(tmp_path, family):
    """The card's recipe block, its dataset columns and its license note named local inputs by this machine's
    absolute paths (home folder, user name), which a push published."""
    out = merged(tmp_path, family, licenses=("mit", "apache-2.0", "mit", "mit"))
    first = next(iter(family.models))
    local = tmp_path / "data" / "my-digits"
    scope = {first: {"dataset": f"{local}:test", "samples": 60, "split_size": 60}}
    (out / "eval_scope.json").write_text(json.dumps(scope))
    comparison = json.loads((out / "eval_comparison.json").read_text())
    comparison["finetuned"] = {str(family.models[first]): comparison["merged"]}  # an input without a task
    (out / "eval_comparison.json").write_text(json.dumps(comparison))
    card = render_card(collect_card(out))
    parent = family.base.parent.parent  # the common parent of the family's folders and the dataset's
    assert str(parent) not in str(card)
    names = {path: f"./{path.relative_to(parent).as_posix()}" for path in [family.base, *family.models.values()]}
    assert f"base_model: {names[family.base]}" in card.text
    assert f"{first} on ./{local.relative_to(parent).as_posix()}:test (all 60 examples)" in card.text
    assert f"{names[family.base]}: mit, {names[family.models[first]]}: apache-2.0" in card.text
    assert f"| {names[family.models[first]]} backbone + task heads |" in card.text
    assert "Some inputs were local folders, not on the Hub" in card.text
    assert load_recipe(out / "hubmerge_recipe.yaml").base_model == ModelRef(path=family.base)  # the output's own
