"""The package's docstring examples are true: the self-contained ones run with ``doctest`` and give the
output shown, and the illustrative ones (a merged folder, a Hub repo, images they do not make) call
hubmerge's functions with arguments those functions take."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

import hubmerge

PACKAGE = Path(hubmerge.__file__).parent

# Examples that need what a docstring cannot make cheaply: a merged output, a Hub repo or dataset, a model
# and its images, a checkpoint. Each is checked for its calls only; every other example runs.
ILLUSTRATIVE = {
    "hubmerge",
    "hubmerge.engine.merge",
    "hubmerge.engine.planning.plan",
    "hubmerge.evaluation",
    "hubmerge.evaluation.api.compare_inputs",
    "hubmerge.evaluation.api.evaluate_classifier",
    "hubmerge.evaluation.api.evaluate_model",
    "hubmerge.fusionbench.from_fusionbench",
    "hubmerge.vision.export.export_torchvision_resnet",
    "hubmerge.vision.heads.read_dataset_labels",
    "hubmerge.vision.loading.load_classifier",
    "hubmerge.vision.loading.load_merged",
    "hubmerge.vision.loading.model_labels",
    "hubmerge.vision.loading.model_tasks",
    "hubmerge.vision.processors.describe_processor",
    "hubmerge.vision.processors.load_processor",
}


def _modules() -> list[ModuleType]:
    """Every module of the package with an example, the metric scripts (folders without __init__) included."""
    names = sorted(
        ".".join(("hubmerge", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py") if ">>>" in path.read_text(encoding="utf-8")
    )
    return [importlib.import_module(name) for name in names]


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    tests = [test for module in _modules() for test in finder.find(module, module.__name__)]
    found = {test.name: test for test in tests if test.examples}
    return [found[name] for name in sorted(found)]


EXAMPLES = _examples()


def test_every_illustrative_example_is_still_found():
    assert ILLUSTRATIVE <= {test.name for test in EXAMPLES}


@pytest.mark.parametrize("test", [t for t in EXAMPLES if t.name not in ILLUSTRATIVE], ids=lambda t: t.name)
def test_a_self_contained_example_runs_as_shown(test, tmp_path, monkeypatch, hub_offline, registry_snapshot):
    monkeypatch.chdir(tmp_path)  # anything an example writes goes there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub_offline for huggingface_hub, which read it at import
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    said: list[str] = []
    result = runner.run(test, out=said.append, clear_globs=True)
    assert result.failed == 0, "".join(said)


def _calls(test: doctest.DocTest) -> list[tuple[str, object, ast.Call]]:
    """The example's calls of functions it names, as its module (or the example's own imports) has them."""
    names = dict(test.globs)
    calls = []
    for example in test.examples:
        tree = ast.parse(example.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                names.update({a.asname or a.name: getattr(module, a.name) for a in node.names})
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
                calls.append((node.func.id, names[node.func.id], node))
    return calls


@pytest.mark.parametrize("test", [t for t in EXAMPLES if t.name in ILLUSTRATIVE], ids=lambda t: t.name)
def test_an_illustrative_example_calls_with_arguments_the_function_takes(test):
    calls = _calls(test)
    assert calls, "names no function of its module: nothing here checks it"
    for _name, function, call in calls:
        if not callable(function) or any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords
        ):
            continue
        try:
            inspect.signature(function).bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
        except TypeError as exc:
            pytest.fail(f"{test.name}: {ast.unparse(call)}: {exc}")
