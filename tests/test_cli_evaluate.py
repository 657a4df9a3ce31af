"""`hubmerge evaluate` and `hubmerge merge --evaluate` end to end, on the tiny trained fixtures.

The quality test merges with the real engine through the CLI, then reads the ordering of merged vs
inputs from `hubmerge evaluate --compare-inputs --json`; ``pytest -s`` prints the measured numbers.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hubmerge.cli import main
from hubmerge.evaluation import EVAL_RESULTS_FILE, EVAL_SCOPE_FILE
from hubmerge.fixtures import FAMILIES, FixtureSet, build_fixtures

from ._eval_helpers import direct_scores, hf_online, offline_hf, upload_dataset, variant

# Asserted margins in accuracy points (mean over the four tasks, each with its own head), set a bit
# below what this pipeline measured on the fixtures as built here (printed with -s); they are the
# same numbers as the direct-torch quality test in test_fixtures.py, but for ResNet task arithmetic:
#   convnext: avg-base +0.079, avg-best single +0.087, TA0.3-TA1.0 +0.339
#   resnet:   avg-base +0.365, avg-best single +0.253, TA0.3-TA1.0 +0.088
# (hubmerge gives BatchNorm statistics the fine-tunes' mean; on every tensor, as the direct-torch test
# does, TA 1.0 makes running variances negative and falls to chance: +0.614).
MARGINS = {
    #           (avg - base, avg - best single fine-tune, TA 0.3 - TA 1.0)
    "convnext": (0.05, 0.05, 0.25),
    "resnet": (0.25, 0.18, 0.05),
}


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with offline_hf(tmp_path_factory.mktemp("hf_home")):
        yield


def _fixtures(family: str) -> FixtureSet:
    return build_fixtures(family=family)  # type: ignore[arg-type]


def _write_recipe(path: Path, fx: FixtureSet, method: str, parameters: dict | None = None) -> Path:
    recipe = {
        "method": method,
        "parameters": parameters or {},
        "base_model": str(fx.base),
        "models": [{"model": str(fx.models[t]), "task": t, "dataset": str(fx.datasets[t])} for t in fx.tasks],
        "target_modules": [fx.backbone],
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _merge(tmp: Path, fx: FixtureSet, method: str, parameters: dict | None = None, *extra: str) -> Path:
    name = method + "".join(f"-{v}" for v in (parameters or {}).values())
    recipe = _write_recipe(tmp / f"{name}.yaml", fx, method, parameters)
    out = tmp / name
    assert main(["merge", str(recipe), "-o", str(out), "--device", "cpu", "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def convnext_average(offline: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _merge(tmp_path_factory.mktemp("cli"), _fixtures("convnext"), "simple_average")


def _mean(report: dict) -> float:
    return float(report["average"]["accuracy"])


def _evaluate(model: Path, *args: str) -> int:
    """``hubmerge evaluate MODEL ARGS --device cpu``; the exit code."""
    return main(["evaluate", str(model), *args, "--device", "cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_merging_beats_its_inputs_end_to_end(
    family: str, offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hubmerge merge` then `hubmerge evaluate --compare-inputs`: the simple average (own heads)
    beats the base backbone and the best single fine-tuned backbone; task arithmetic 0.3 beats 1.0."""
    fx = _fixtures(family)
    average = _merge(tmp_path, fx, "simple_average")
    report_path = tmp_path / "compare.json"
    assert _evaluate(average, "--compare-inputs", "--quiet", "--json", str(report_path)) == 0
    table = capsys.readouterr().out
    assert "merged" in table and "base + task heads" in table
    compare = json.loads(report_path.read_text())

    ta = {}
    for scaling in (0.3, 1.0):
        out = _merge(tmp_path, fx, "task_arithmetic", {"scaling_factor": scaling})
        path = tmp_path / f"ta-{scaling}.json"
        assert _evaluate(out, "--quiet", "--json", str(path)) == 0
        ta[scaling] = _mean(json.loads(path.read_text()))

    merged, base = _mean(compare["merged"]), _mean(compare["base"])
    singles = {label: _mean(row) for label, row in compare["finetuned"].items()}
    best_single = max(singles.values())
    over_base, over_single, ta_gap = MARGINS[family]
    print(
        f"\n[{family}] mean accuracy: simple_average {merged:.3f}, base {base:.3f}, individual "
        f"{_mean(compare['individual']):.3f}, singles "
        + ", ".join(f"{k}={v:.3f}" for k, v in singles.items())
        + f", TA0.3 {ta[0.3]:.3f}, TA1.0 {ta[1.0]:.3f}\n"
        f"  margins: avg-base {merged - base:+.3f} (assert >= {over_base}), avg-best_single "
        f"{merged - best_single:+.3f} (assert >= {over_single}), TA0.3-TA1.0 {ta[0.3] - ta[1.0]:+.3f} "
        f"(assert >= {ta_gap})"
    )
    assert _mean(compare["individual"]) > 0.95
    assert merged >= base + over_base
    assert merged >= best_single + over_single
    assert ta[0.3] >= ta[1.0] + ta_gap


def test_merge_evaluate_writes_report(offline: None, tmp_path: Path) -> None:
    fx = _fixtures("convnext")
    out = _merge(tmp_path, fx, "simple_average", None, "--evaluate")
    report = json.loads((out / EVAL_RESULTS_FILE).read_text())
    assert set(report) == {*fx.tasks, "average"}
    assert all(set(entry) == {"accuracy", "loss"} for entry in report.values())
    assert any(0 < report[task]["accuracy"] < 1 for task in fx.tasks)  # the whole split
    whole = json.loads((out / EVAL_SCOPE_FILE).read_text())  # what each accuracy was measured on
    assert list(whole) == list(fx.tasks)
    assert all(s["samples"] == s["split_size"] > 1 and s["dataset"].endswith(":test") for s in whole.values())
    (tmp_path / "one").mkdir()
    one = _merge(tmp_path / "one", fx, "simple_average", None, "--evaluate", "--max-samples", "1")
    report = json.loads((one / EVAL_RESULTS_FILE).read_text())
    assert all(report[task]["accuracy"] in (0.0, 1.0) for task in fx.tasks)  # one example per task
    scope = json.loads((one / EVAL_SCOPE_FILE).read_text())
    assert {t: (s["samples"], s["split_size"]) for t, s in scope.items()} == {
        t: (1, s["split_size"]) for t, s in whole.items()}
    assert main(["card", str(one)]) == 0  # the card says the accuracies rest on one example each
    card = (one / "README.md").read_text()
    named = f"./{fx.datasets[fx.tasks[0]].relative_to(fx.base.parents[1]).as_posix()}:test"  # below the inputs' parent
    assert f"{fx.tasks[0]} on {named} (1 of {whole[fx.tasks[0]]['split_size']} examples" in card
    assert "fixed random subset of each evaluation split" in card


def test_a_failed_evaluation_keeps_the_merge_and_says_where(
    offline: None, hub_offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures("convnext")
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["models"][1]["dataset"] = "nobody/no-such-dataset"  # offline: no early check, and no load
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(out), "--device", "cpu", "--evaluate"]) == 1
    err = capsys.readouterr().err
    assert f"the merged model is kept in {out}; once its evaluation can run, `hubmerge evaluate {out} --save`" in err
    assert err.index("kept in") < err.index("error: DatasetError") and (out / "model.safetensors").is_file()



def test_ctrl_c_during_the_evaluation_says_the_merge_is_kept(
    offline: None, hub_offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted after the merge, the output is whole and stays: it is named, or 'nothing partial was left'
    alone sent the user to merge again, into an OutputExistsError."""
    import hubmerge.evaluation
    from hubmerge.cli import INTERRUPTED

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(hubmerge.evaluation, "evaluate_recipe_tasks", interrupted)
    fx = _fixtures("convnext")
    out = tmp_path / "out"
    recipe = _write_recipe(tmp_path / "r.yaml", fx, "simple_average")
    assert main(["merge", str(recipe), "-o", str(out), "--device", "cpu", "--evaluate", "-q"]) == INTERRUPTED
    err = capsys.readouterr().err
    assert f"the merged model is kept in {out}" in err and "interrupted" in err
    assert (out / "model.safetensors").is_file()


def test_a_command_to_run_next_names_a_folder_with_a_space_as_one_word(
    offline: None, hub_offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`hubmerge evaluate my out --save`, pasted, evaluated a model 'my' with a task 'out'."""
    import hubmerge.evaluation

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(hubmerge.evaluation, "evaluate_recipe_tasks", interrupted)
    out = tmp_path / "my out"
    recipe = _write_recipe(tmp_path / "r.yaml", _fixtures("convnext"), "simple_average")
    main(["merge", str(recipe), "-o", str(out), "--device", "cpu", "--evaluate", "-q"])
    assert f"`hubmerge evaluate '{out}' --save`" in capsys.readouterr().err
    assert main(["push", str(out), "--repo-id", "a/b", "--max-samples", "5"]) == 2
    err = "".join(capsys.readouterr().err.replace("│", " ").split())  # the panel wraps the long path anywhere
    assert "".join(f"`hubmerge evaluate '{out}' --max-samples N --save`".split()) in err


def test_a_base_without_an_image_processor_is_refused_before_an_evaluated_merge(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output takes the base's preprocessor_config.json and its evaluation needs one: a base without it (a
    model saved without its processor) failed `merge --evaluate` and `push` only after the merge."""
    fx = _fixtures("convnext")
    base = tmp_path / "base"
    shutil.copytree(fx.base, base)
    (base / "preprocessor_config.json").unlink()
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["base_model"] = str(base)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(out), "--device", "cpu", "--evaluate"]) == 1
    err = "".join(capsys.readouterr().err.split())  # the console wraps the long path anywhere
    assert "".join(f"error: ModelFilesNotFoundError: {base}:preprocessor_config.json: not found".split()) in err
    assert not out.exists()
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(out), "--device", "cpu", "--quiet"]) == 0  # unevaluated
    for model in recipe["models"]:  # --evaluate with no dataset named evaluates nothing: no processor needed
        del model["dataset"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    command = ["merge", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out2"), "--device", "cpu", "--quiet"]
    assert main([*command, "--evaluate"]) == 0

def test_classes_named_otherwise_are_matched_by_position_when_asked(
    offline: None, local_hub: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hub dataset whose class names differ from the head's (same order) fails `merge --evaluate` by name,
    before the merge (it was found only at the evaluation), and says how to match by position;
    --match-labels position then scores exactly as the same examples under the head's own names do, and the
    table, the saved scope and the card say the classes were matched by position. Bad values, and a pushed
    directory, are refused before any work."""
    from huggingface_hub import HfApi

    fx = _fixtures("convnext")
    task = fx.tasks[0]
    renamed = variant(fx.datasets[task], tmp_path / "renamed", names=[f"digit {n}" for n in range(5)])
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo = upload_dataset(api, f"alice/renamed-{uuid.uuid4().hex[:8]}", renamed, tmp_path / "up")
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["models"][0]["dataset"] = repo  # a local dataset's names are checked when planning, a Hub one's
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))  # once the plan has the heads' labels
    hf_online(monkeypatch, True)
    merge = ["merge", str(tmp_path / "r.yaml"), "--device", "cpu", "--quiet", "--evaluate", "--max-samples", "24"]
    for command in ([*merge, "-o", str(tmp_path / "by-name")],
                    ["push", str(tmp_path / "r.yaml"), "--repo-id", f"alice/renamed-merge-{uuid.uuid4().hex[:8]}",
                     "--token", local_hub.alice_token, "--quiet"]):
        assert main(command) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert (f"error: HeadMismatchError: task '{task}': the head's id2label and dataset {repo}:test name "
                "their 5 classes differently") in err
        assert "(CLI: --match-labels position; web app: match classes by position)" in err
        assert "merged model is kept" not in err
    assert not (tmp_path / "by-name").exists()
    by_position = tmp_path / "by-position"
    assert main([*merge, "-o", str(by_position), "--match-labels", "position"]) == 0
    scores = json.loads((by_position / EVAL_RESULTS_FILE).read_text())[task]
    own_names = tmp_path / "own.json"
    assert _evaluate(by_position, "--task", f"{task}={fx.datasets[task]}", "--max-samples", "24", "--quiet",
                     "--json", str(own_names)) == 0
    assert json.loads(own_names.read_text())[task] == scores
    assert "matched by position" not in " ".join(capsys.readouterr().out.split())  # same names: nothing assumed
    assert json.loads((by_position / EVAL_SCOPE_FILE).read_text())[task]["labels"] == "position"
    assert _evaluate(by_position, "--match-labels", "position", "--max-samples", "24") == 0
    assert (f"Classes matched by position for {task}: the dataset names them otherwise than the head"
            in " ".join(capsys.readouterr().out.split()))
    assert main(["card", str(by_position)]) == 0
    assert (f"The classes of {task} were matched by position: the evaluation dataset names them otherwise than the "
            "head's labels") in " ".join((by_position / "README.md").read_text().split())

    def flat(text: str) -> str:  # a usage error comes in a rich panel: compare without its frame and wrapping
        return "".join(text.replace("│", "").split())

    assert main([*merge, "-o", str(tmp_path / "bad"), "--match-labels", "index"]) == 2
    assert flat("'name' or 'position', got 'index'") in flat(capsys.readouterr().err)
    # where no evaluation runs, they were ignored without a word
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "bad"), "--max-samples", "24"]) == 2
    assert flat("--max-samples: it only shapes an evaluation, and without --evaluate none runs") in flat(
        capsys.readouterr().err)
    assert main(["push", str(tmp_path / "r.yaml"), "--repo-id", "alice/x", "--no-evaluate", "--match-labels",
                 "position"]) == 2
    assert flat("--match-labels: it only shapes an evaluation, and --no-evaluate turns it off") in flat(
        capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()
    assert main(["push", str(by_position), "--repo-id", "alice/x", "--match-labels", "position"]) == 2
    assert flat(f"`hubmerge evaluate {by_position} --match-labels position --save`") in flat(capsys.readouterr().err)


def test_a_local_dataset_named_otherwise_is_matched_by_position_when_asked(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A save_to_disk dataset in the recipe whose class names differ from the head's (same order): merge
    --evaluate --match-labels position merges and scores it, as it does a Hub dataset; the plan refused it
    whatever --match-labels said."""
    fx = _fixtures("convnext")
    task = fx.tasks[0]
    renamed = variant(fx.datasets[task], tmp_path / "renamed", names=[f"digit {n}" for n in range(5)])
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["models"][0]["dataset"] = str(renamed)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    merge = ["merge", str(tmp_path / "r.yaml"), "--device", "cpu", "-q", "--evaluate", "--max-samples", "8"]
    assert main([*merge, "-o", str(tmp_path / "by-name")]) == 1
    assert "match them by position: --match-labels position" in " ".join(capsys.readouterr().err.split())
    out = tmp_path / "by-position"
    assert main([*merge, "-o", str(out), "--match-labels", "position"]) == 0
    assert json.loads((out / EVAL_SCOPE_FILE).read_text())[task]["labels"] == "position"
    head = json.loads((out / "heads" / task / "config.json").read_text())
    assert head["id2label"] == json.loads((fx.models[task] / "config.json").read_text())["id2label"]
    from hubmerge.publish import build  # push and the app: the plan is told how labels will be matched
    from hubmerge.recipe import load_recipe

    built = build(load_recipe(tmp_path / "r.yaml"), tmp_path / "built", device="cpu", compare_inputs=False,
                  max_samples=8, match_labels="position")
    assert built.report is not None
    assert json.loads((tmp_path / "built" / EVAL_SCOPE_FILE).read_text())[task]["labels"] == "position"


def test_evaluate_save_puts_the_reports_into_the_output_for_its_card(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures("convnext")
    out = _merge(tmp_path, fx, "simple_average")  # merged without --evaluate: the card has no numbers
    assert main(["card", str(out)]) == 0 and "No evaluation was run" in (out / "README.md").read_text()
    assert _evaluate(out, "--compare-inputs", "--max-samples", "3", "--save", "--quiet") == 0
    report, comparison = (json.loads((out / name).read_text()) for name in (EVAL_RESULTS_FILE, "eval_comparison.json"))
    assert report == comparison["merged"] and set(report) == {*fx.tasks, "average"}
    assert {s["samples"] for s in json.loads((out / EVAL_SCOPE_FILE).read_text()).values()} == {3}
    assert main(["card", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "No evaluation was run" not in card and "| base + task heads |" in card and "(3 of " in card
    capsys.readouterr()
    assert _evaluate(out, "--max-samples", "2", "--save") == 0  # the merged model alone this time
    said = " ".join(capsys.readouterr().err.split())
    assert "".join(f"`hubmerge push {out} --repo-id NAME` publishes it".split()) in "".join(said.split())
    # it said nothing of the comparison it removed
    assert ("note: the earlier comparison with the inputs (eval_comparison.json) is removed, as its merged row "
            "would disagree with these results; add --compare-inputs to save a new one") in said
    assert not (out / "eval_comparison.json").exists()  # its merged row would contradict the new results
    assert main(["card", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "| base + task heads |" not in card and "(2 of " in card
    one = f"{fx.tasks[0]}={fx.datasets[fx.tasks[0]]}"  # one task: the others' saved results went without a word
    assert _evaluate(out, "-t", one, "--max-samples", "2", "--save") == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"note: the saved results no longer hold {', '.join(fx.tasks[1:])} (this evaluation left them" in said
    assert set(json.loads((out / EVAL_RESULTS_FILE).read_text())) == {fx.tasks[0], "average"}


def test_an_output_replaced_while_it_is_evaluated_or_carded_gets_neither_reports_nor_card(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another command's `merge --overwrite` to the same folder, landing while this one evaluates: the
    # folder keeps its path but is another model, so results written then would describe the wrong one.
    import hubmerge.card
    import hubmerge.evaluation
    import hubmerge.evaluation.api

    fx = _fixtures("convnext")
    out = _merge(tmp_path, fx, "simple_average")

    def replacing(work: Any) -> Any:
        def run(model: Any, *args: Any, **kwargs: Any) -> Any:
            result = work(model, *args, **kwargs)
            aside = tmp_path / f"aside-{uuid.uuid4().hex[:6]}"
            Path(model).rename(aside)
            shutil.copytree(aside, model)  # the same files at the same path: another folder
            return result
        return run

    real_evaluate, real_collect = hubmerge.evaluation.evaluate_model, hubmerge.card.collect_card
    monkeypatch.setattr(hubmerge.evaluation, "evaluate_model", replacing(real_evaluate))
    monkeypatch.setattr(hubmerge.evaluation.api, "evaluate_model", replacing(real_evaluate))
    monkeypatch.setattr(hubmerge.card, "collect_card", replacing(real_collect))
    capsys.readouterr()
    assert _evaluate(out, "--max-samples", "2", "--save") == 1
    assert main(["merge", str(tmp_path / "simple_average.yaml"), "-o", str(tmp_path / "again"), "--device", "cpu",
                 "--evaluate", "--max-samples", "2", "--quiet"]) == 1
    assert main(["card", str(out)]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert said.count("was replaced by another output (another command merged into it) while this command worked "
                      "on it") == 3
    assert "hubmerge did not write the evaluation reports into it" in said and "did not write the card" in said
    for folder in (out, tmp_path / "again"):
        assert not {EVAL_RESULTS_FILE, EVAL_SCOPE_FILE, "README.md"} & {p.name for p in folder.iterdir()}


def test_nan_outputs_count_as_wrong_and_every_display_says_so(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    from hubmerge.evaluation import EvalReport, TaskResult
    from hubmerge.ui.views import results_note

    fx = _fixtures("resnet")
    out = _merge(tmp_path, fx, "simple_average")
    weights = load_file(out / "model.safetensors")
    name = next(n for n in weights if n.endswith(".running_var"))
    weights[name] = -weights[name]  # a negative variance: what a task vector could do to it
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert _evaluate(out, "--max-samples", "20", "--save") == 0
    printed = capsys.readouterr().out
    results = json.loads((out / EVAL_RESULTS_FILE).read_text())
    # argmax takes a NaN for the largest logit: the examples of class 0 used to count as right
    assert all(results[t]["accuracy"] == 0 and results[t]["loss"] != results[t]["loss"] for t in fx.tasks)
    assert "NaN or infinite outputs, counted as wrong" in printed and f"{fx.tasks[0]} 20 of 20" in printed
    assert {s["non_finite"] for s in json.loads((out / EVAL_SCOPE_FILE).read_text()).values()} == {20}
    assert main(["card", str(out)]) == 0
    card = " ".join((out / "README.md").read_text().split())
    assert f"counted as wrong: {fx.tasks[0]} (20 of 20 examples)" in card
    broken = EvalReport("merged", {"low": TaskResult(0.0, float("nan"), num_samples=20, non_finite=20)})
    assert "NaN or infinite outputs, counted as wrong (examples: low 20 of 20)" in results_note(broken)


def test_evaluate_save_refuses_what_is_no_merged_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = _fixtures("convnext")
    assert _evaluate(fx.models[fx.tasks[0]], "--save") == 2  # a fine-tune, not an output: nothing evaluated
    assert "is no merged output directory" in capsys.readouterr().err
    assert not (fx.models[fx.tasks[0]] / EVAL_RESULTS_FILE).exists()
    # a Hub repo id was told it "holds no hubmerge_recipe.yaml", though the repo holds one
    assert _evaluate("org/merged@dev", "--save") == 2
    assert "'org/merged@dev' is no folder here: --save writes the reports into a merged output folder" in " ".join(
        capsys.readouterr().err.replace("│", "").split())


def test_evaluate_with_tasks(
    convnext_average: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures("convnext")
    path = tmp_path / "r.json"
    code = _evaluate(
        convnext_average,
        "--task", f"digits_low={fx.datasets['digits_low']}:test",
        "-t", f"digits_parity={fx.datasets['digits_parity']}",
        "--max-samples", "40", "--batch-size", "16", "--json", str(path),
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "digits_low" in captured.out and "average" in captured.out
    assert f"{fx.datasets['digits_low']}:test" in captured.out, "a piped table keeps every path whole"
    report = json.loads(path.read_text())
    assert list(report) == ["digits_low", "digits_parity", "average"]
    # Without --task: the datasets of the stored recipe.
    assert _evaluate(convnext_average, "--quiet", "--json", str(path)) == 0
    assert set(json.loads(path.read_text())) == {*fx.tasks, "average"}
    # A bare name takes the recipe's dataset for it ("task 'digits_low' has no known dataset", though the
    # recipe names one); a name given twice is refused (the last one silently won).
    assert _evaluate(convnext_average, "-t", "digits_high", "--max-samples", "8", "--json", str(path)) == 0
    assert list(json.loads(path.read_text())) == ["digits_high", "average"]
    assert _evaluate(convnext_average, "-t", "digits_low", "-t", "digits_low=x/y", "--json", str(path)) == 2
    assert "each task once: digits_low is given more than once" in capsys.readouterr().err
    from hubmerge.errors import RecipeError
    from hubmerge.evaluation import evaluate_model

    # from Python, task names alone: a list was an AttributeError, one name was read letter by letter
    for names in (["digits_high"], "digits_high"):
        assert list(evaluate_model(convnext_average, names, max_samples=4, device="cpu").results) == ["digits_high"]
    with pytest.raises(RecipeError, match="a mapping of task to dataset, or a list of task names"):
        evaluate_model(convnext_average, [1])  # type: ignore[list-item]
    plain = fx.models["digits_low"]  # no recipe: a bare name it cannot place is refused as before
    assert _evaluate(plain, "-t", "digits_low") == 1
    assert "task 'digits_low' has no known dataset; write --task digits_low=DATASET" in " ".join(
        capsys.readouterr().err.split())


def test_the_json_report_goes_to_stdout_or_a_file_that_can_take_it(
    convnext_average: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--json -` wrote a file named "-"; `--json DIR` failed after the whole evaluation with an unexpected
    IsADirectoryError."""
    monkeypatch.chdir(tmp_path)
    assert _evaluate(convnext_average, "--quiet", "--max-samples", "8", "--json", "-") == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {*_fixtures("convnext").tasks, "average"}  # stdout is the JSON alone
    assert "average" in captured.err and not (tmp_path / "-").exists()  # the table went to stderr
    from hubmerge import evaluation

    monkeypatch.setattr(evaluation, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before refusing"))
    recipe = tmp_path / "recipe.yaml"  # `--json recipe.yaml` for `--json report.json` wrote over the recipe
    recipe.write_text("method: ties\n")
    for path, why in ((tmp_path, "is a directory; name a file in it"), (tmp_path / "no" / "r.json", "does not exist"),
                      (recipe, "exists and is no JSON report, so it would be lost")):
        assert _evaluate(convnext_average, "--quiet", "--json", str(path)) == 2
        assert why in " ".join(capsys.readouterr().err.replace("│", "").split())
    assert recipe.read_text() == "method: ties\n"
    monkeypatch.undo()
    (tmp_path / "old.json").write_text('{"old": 1}')  # an earlier report is replaced, as before
    (tmp_path / "mktemp").touch()  # and an empty file, as `mktemp` makes for a script
    for path in (tmp_path / "old.json", tmp_path / "mktemp"):
        assert _evaluate(convnext_average, "--quiet", "--max-samples", "8", "--json", str(path)) == 0
        assert "average" in json.loads(path.read_text())


def test_evaluate_unknown_task(convnext_average: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = _fixtures("convnext")
    assert _evaluate(convnext_average, "--task", f"cars={fx.datasets['digits_low']}") == 1
    err = capsys.readouterr().err
    assert "UnknownTaskError" in err and "'cars'" in err and "digits_rotated" in err


def test_evaluate_bad_inputs(
    convnext_average: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures("convnext")
    assert _evaluate(convnext_average, "--task", f"digits_low={tmp_path / 'missing'}") == 1
    assert "DatasetError" in capsys.readouterr().err
    assert _evaluate(convnext_average, "--task", f"digits_parity={fx.datasets['digits_low']}") == 1
    err = capsys.readouterr().err
    assert "HeadMismatchError" in err and "2 outputs" in err
    assert _evaluate(convnext_average, "--task", "digits_low=") == 1
    assert "RecipeError" in capsys.readouterr().err
    assert _evaluate(convnext_average, "--max-samples", "0") != 0  # a usage error
    capsys.readouterr()
    for compare in ([], ["--compare-inputs"]):  # refused before the display starts or a model loads
        assert main(["evaluate", str(convnext_average), *compare, "--device", "cuda:99"]) == 1
        assert capsys.readouterr().err.startswith("error: RecipeError: 'device'")


@pytest.mark.parametrize("which", ["fine-tune", "base"])
def test_compare_inputs_says_which_local_inputs_are_gone_before_any_work(
    convnext_average: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    """An output merged from local folders, looked at where (some of) those folders are not: a fine-tune's, or
    the base's (an input too, whose row --compare-inputs loads)."""
    moved = tmp_path / "moved"
    shutil.copytree(convnext_average, moved)
    recipe = yaml.safe_load((moved / "hubmerge_recipe.yaml").read_text())
    gone = str(tmp_path / "elsewhere" / which)
    if which == "base":
        recipe["base_model"] = gone
    else:
        recipe["models"][1]["model"] = gone
    (moved / "hubmerge_recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr("hubmerge.evaluation.api.run_jobs", lambda *a, **k: pytest.fail("evaluated first"))
    assert _evaluate(moved, "--compare-inputs") == 1
    err = "".join(capsys.readouterr().err.split())  # long paths wrap anywhere: compare without spaces
    said = (f"error: ModelFilesNotFoundError: --compare-inputs loads the inputs that {moved}'s hubmerge_recipe.yaml "
            f"names, and 1 of them, local directories, are not here: {gone}. Run it where they are, or evaluate "
            "the output alone (without --compare-inputs).")
    assert err.startswith("".join(said.split()))


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.replace("│", "").split())


def test_a_dataset_with_labels_under_another_name_is_evaluated_once_named(
    convnext_average: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels in another column (CIFAR-100's coarse_label, a CSV's target) were refused with no way to name them;
    --label-column names them for the datasets --task gives, which then score as the same data under 'label'."""
    fx = _fixtures("convnext")
    low = fx.datasets["digits_low"]
    coarse = variant(low, tmp_path / "coarse", plain_int_labels=True, rename={"label": "coarse_label"})
    as_label, named = tmp_path / "label.json", tmp_path / "named.json"
    assert _evaluate(convnext_average, "-t", f"digits_low={low}", "--json", str(as_label)) == 0
    assert _evaluate(convnext_average, "-t", f"digits_low={coarse}") == 1
    assert "has no label column" in (err := _said(capsys)) and "--label-column COLUMN for `hubmerge evaluate`" in err
    assert _evaluate(convnext_average, "-t", f"digits_low={coarse}", "--label-column", "coarse_label",
                     "--json", str(named)) == 0
    expected, got = json.loads(as_label.read_text())["digits_low"], json.loads(named.read_text())["digits_low"]
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert f"{coarse}:test, label column coarse_label" in capsys.readouterr().out  # the table, as the card says it
    assert _evaluate(convnext_average, "-t", f"digits_low={coarse}", "--label-column", "coarse") == 1
    assert ("has no column 'coarse' (named as its label_column). Its columns: image (Image), coarse_label (Value)."
            in _said(capsys))
    # usage errors: no dataset given to name a column of (the recipe's name their own), a blank name
    assert _evaluate(convnext_average, "-t", "digits_low", "--label-column", "coarse_label") == 2
    assert "applies to the datasets given with --task NAME=DATASET, and no --task gives one" in _said(capsys)
    assert _evaluate(convnext_average, "-t", f"digits_low={low}", "--image-column", " ") == 2
    assert "name a column of the datasets" in _said(capsys)


def test_a_recipes_named_label_column_reaches_the_output_and_its_evaluation(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = _fixtures("convnext")
    coarse = variant(fx.datasets["digits_low"], tmp_path / "coarse", plain_int_labels=True,
                     rename={"label": "coarse_label"})
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["models"] = [m for m in recipe["models"] if m["task"] in ("digits_low", "digits_parity")]
    recipe["models"][0]["dataset"] = {"path": str(coarse), "label_column": "coarse_label"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(out), "--device", "cpu", "--quiet", "--evaluate"]) == 0
    stored = yaml.safe_load((out / "hubmerge_recipe.yaml").read_text())
    assert stored["models"][0]["dataset"] == {"path": str(coarse), "split": "test", "label_column": "coarse_label"}
    merged = json.loads((out / EVAL_RESULTS_FILE).read_text())
    assert _evaluate(out, "--json", str(tmp_path / "again.json")) == 0  # the datasets of the stored recipe
    assert json.loads((tmp_path / "again.json").read_text())["digits_low"] == merged["digits_low"]
    assert _evaluate(out, "-t", f"digits_low={fx.datasets['digits_low']}", "--json", str(tmp_path / "l.json")) == 0
    assert json.loads((tmp_path / "l.json").read_text())["digits_low"]["accuracy"] == pytest.approx(
        merged["digits_low"]["accuracy"], abs=1e-12)
    assert main(["card", str(out)]) == 0  # the card names the dataset on one line, as it is published
    card = (out / "README.md").read_text()
    assert re.search(r"digits_low on \./\S*coarse:test, label column coarse_label \(all ", card)
    assert re.search(r"\| \./\S*coarse:test, label column coarse_label \|", card) and str(tmp_path) not in card


def test_evaluate_save_records_the_named_columns_for_the_card_and_the_next_evaluation(
    offline: None, local_hub: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate --save --label-column` recorded its dataset as path:split alone: the card did not say the column,
    and a later `evaluate OUTPUT` (or of its pushed repo) read the first ClassLabel, 'label', which holds other
    classes here. The columns are in eval_scope.json and the card, and a later evaluation reads them."""
    import datasets
    from huggingface_hub import HfApi

    fx = _fixtures("convnext")
    task = fx.tasks[0]  # the output's default task: its root has this head, for the direct computation
    part = datasets.load_from_disk(str(fx.datasets[task]))["test"]
    classes = part.features["label"]
    features = datasets.Features({"image": part.features["image"], "label": classes, "true": classes})
    shifted = [(v + 1) % classes.num_classes for v in part["label"]]  # 'label' holds other classes than the images
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(
        {"image": part["image"], "label": shifted, "true": part["label"]}, features=features)}
    ).save_to_disk(str(tmp_path / "two"))
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo = upload_dataset(api, f"alice/two-{uuid.uuid4().hex[:8]}", tmp_path / "two", tmp_path / "up")
    recipe = yaml.safe_load(_write_recipe(tmp_path / "r.yaml", fx, "simple_average").read_text())
    recipe["models"] = [m for m in recipe["models"] if m["task"] in fx.tasks[:2]]
    recipe["models"][0]["dataset"] = repo  # named without its column: read as 'label' unless told
    del recipe["models"][1]["dataset"]  # a local one, which the pushed repo's evaluation would ask for
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    hf_online(monkeypatch, True)
    out = tmp_path / "out"
    assert main(["merge", str(tmp_path / "r.yaml"), "-o", str(out), "--device", "cpu", "--quiet"]) == 0
    expected, _ = direct_scores(out, fx.datasets[task])  # 'true' holds the fixture's own labels
    as_label = tmp_path / "as_label.json"
    assert _evaluate(out, "-t", task, "--json", str(as_label)) == 0
    assert json.loads(as_label.read_text())[task]["accuracy"] < expected - 0.5  # the column matters here

    assert _evaluate(out, "-t", f"{task}={repo}", "--label-column", "true", "--save", "--quiet") == 0
    scope = json.loads((out / EVAL_SCOPE_FILE).read_text())[task]
    assert scope["dataset"] == f"{repo}:test" and scope["label_column"] == "true" and scope["image_column"] is None
    assert json.loads((out / EVAL_RESULTS_FILE).read_text())[task]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert main(["card", str(out)]) == 0
    card = " ".join((out / "README.md").read_text().split())
    assert f"{task} on {repo}:test, label column true (all " in card
    assert f"| {repo}:test |" in card  # the tasks' table: the recipe's dataset, which names no column

    pushed = f"alice/two-merge-{uuid.uuid4().hex[:8]}"
    assert main(["push", str(out), "--repo-id", pushed, "--token", local_hub.alice_token, "--quiet"]) == 0
    for model in (str(out), pushed):  # no --task: the recipe's dataset, read with the column measured with
        again = tmp_path / f"again-{model.replace('/', '_')[-8:]}.json"
        assert _evaluate(model, "--json", str(again), "--token", local_hub.alice_token, "--quiet") == 0
        assert json.loads(again.read_text())[task]["accuracy"] == pytest.approx(expected, abs=1e-12)

    # offline, with the repo cached by a hubmerge that never read eval_scope.json: the recipe's dataset as it names
    # it, as before the file named columns (it was a HubError: the file is not in the local cache)
    from huggingface_hub import try_to_load_from_cache

    Path(str(try_to_load_from_cache(pushed, EVAL_SCOPE_FILE))).unlink()
    hf_online(monkeypatch, False)
    offline_run = tmp_path / "offline.json"
    assert _evaluate(pushed, "--json", str(offline_run), "--quiet") == 0
    assert json.loads(offline_run.read_text())[task] == json.loads(as_label.read_text())[task]
