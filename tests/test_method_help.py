"""`hubmerge methods`: every method and parameter from the registry, and recipes that load as printed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from hubmerge.cli import main
from hubmerge.method_help import _details, allowed_values, recipe_start
from hubmerge.methods import get_method, list_methods
from hubmerge.recipe import Recipe

from .test_cli import _main_in_fresh_interpreter


def test_the_overview_names_every_method_and_parameter_with_its_default(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out  # the answer asked for: stdout, unlike the plan's progress
    for method in list_methods():
        row = next(line for line in out.splitlines() if line.startswith(f"│ {method.name} "))
        for spec in method.params:
            assert spec.name in out
        assert ("required" in row) == (method.needs_base or method.needs_weights)
    assert "density=0.2, scaling_factor=0.3, disjoint_merge=sum" in out
    assert "``" not in out  # the docstrings' reST marks are not shown


@pytest.mark.parametrize("method", list_methods(), ids=lambda m: m.name)
def test_the_recipe_to_start_from_loads_with_every_default(method):
    recipe = Recipe.from_yaml(recipe_start(method))
    assert recipe.method == method.name and list(recipe.tasks) == ["task_a", "task_b"]
    assert method.resolve_params(recipe.parameters) == method.resolve_params({})
    assert (recipe.base_model is not None) == method.accepts_base


def test_one_method_in_full(capsys):
    assert main(["methods", "ties"]) == 0
    out = capsys.readouterr().out
    assert "https://arxiv.org/abs/2306.01708" in out and "base model: required" in out
    assert "0 to 1" in out and "number >= 0" in out and "sum | mean" in out
    assert "FusionBench's 'threshold' is 'density' here" in out and "FusionBench's 'ties_merging' is 'ties'" in out
    assert recipe_start(get_method("ties")) in out


def test_how_many_models_and_which_weights_a_method_takes(capsys):
    """SLERP takes exactly two models, Model Stock two or more; a weight is marked optional where it is."""
    assert main(["methods", "slerp"]) == 0
    out = capsys.readouterr().out
    assert "base model: not used; per-model weights: not used; models: exactly 2" in out
    assert main(["methods", "model_stock"]) == 0
    assert "models: 2 or more" in capsys.readouterr().out
    console = Console(record=True, width=200)  # a registered method may take a bounded range of models
    _details(replace(get_method("model_stock"), max_models=4), console)
    assert "models: 2 to 4" in console.export_text()
    assert "    weight: 1.0   # optional\n" in recipe_start(get_method("task_arithmetic"))
    assert "    weight: 1.0\n" in recipe_start(get_method("weighted_average"))


def test_allowed_values_say_what_validation_accepts():
    dare = {spec.name: allowed_values(spec) for spec in get_method("dare").params}
    assert dare == {"drop_rate": "0 to 0.999", "rescale": "true | false", "seed": "any integer",
                    "combine": "linear | ties", "disjoint_merge": "sum | mean", "scaling_factor": "number >= 0"}


def test_an_unknown_or_foreign_name_is_a_usage_error(capsys):
    assert main(["methods", "linear"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "mergekit's 'linear' is 'weighted_average' here" in err
    # the argument is the method's name, not a recipe's 'method' field
    assert "Invalid value for 'name': unknown merge method 'linear'" in err and "'method':" not in err


def test_listing_methods_imports_no_torch():
    out, imported = _main_in_fresh_interpreter(("torch", "numpy"), "methods", "dare")
    assert imported == [] and "drop_rate" in out


def test_a_table_on_a_terminal_folds_to_its_width():
    """Off a terminal a table is printed whole (test_one_method_in_full); on one it fits the window."""
    import io

    from rich.console import Console
    from rich.table import Table

    from hubmerge.tables import print_table

    screen = io.StringIO()
    table = Table("parameter", "what it does")
    table.add_row("density", "fraction of each task vector kept, by magnitude " * 3)
    print_table(Console(file=screen, force_terminal=True, width=40, color_system=None), table)
    lines = screen.getvalue().splitlines()
    assert len(lines) > 5 and max(len(line) for line in lines) <= 40


def test_a_terminal_narrower_than_a_table_can_fold_keeps_every_cell():
    """At 40 columns the plan's numbers (no_wrap) left its names (folded) no width at all, and a long word in
    a wrapped column ended in an ellipsis: the table is drawn wider than the window instead, as wide as the
    columns' floors (at 30 columns, given only the window, rich shrank them evenly and the names went)."""
    import io

    from rich.console import Console
    from rich.table import Table

    from hubmerge.tables import print_table

    for width in (40, 30, 20):  # below ~60 the floors alone are wider than the window
        table = Table()  # the plan's two tables, as render_plan draws them
        for column in ("input", "model", "revision", "files", "tensors", "size"):
            numeric = column in ("files", "tensors", "size")
            table.add_column(column, overflow="fold", no_wrap=numeric)
        table.add_row("digits_rotated", "hubmerge-demo/convnext-tiny-digits-rotated", "0236ca5bfcbf", "1", "56",
                      "939.17 kB")
        table.add_row("b", "org/b", "0236ca5bfcbf", "1", "3141592653", "12.2 GB")  # wider than its header
        summary = Table(show_header=False)
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("method", "task_arithmetic (scaling_factor=0.3)")
        summary.add_row("head: digits_rotated", "kept (fine-tuned); 10 classes from the registry")
        summary.add_row("peak memory (buffers)", "12.10 MB")
        screens = [io.StringIO(), io.StringIO()]
        for each, screen in zip((table, summary), screens):
            print_table(Console(file=screen, force_terminal=True, width=width, color_system=None), each)
        rows = [line.split("│")[1:4] for line in screens[0].getvalue().splitlines() if line.startswith("│")]
        names = ["".join(row[i].strip() for row in rows) for i in (0, 1, 2)]  # the folded pieces, joined again
        assert names == ["digits_rotatedb", "hubmerge-demo/convnext-tiny-digits-rotatedorg/b",
                         "0236ca5bfcbf" * 2]  # the two rows' pieces
        assert "3141592653" in screens[0].getvalue() and "939.17 kB" in screens[0].getvalue()
        assert "(scaling_factor=0.3)" in screens[1].getvalue()
        assert not any("…" in screen.getvalue() for screen in screens)
