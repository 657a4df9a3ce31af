"""What ``hubmerge methods`` prints: the merge methods, their parameters and a recipe to start from.

The registry holds every fact (schema, bounds, help, paper, other tools' names for it), so a recipe
writer reads them here instead of in the source; this module only lays them out.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .methods import MergeMethod, ParamSpec, get_method, list_methods

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["allowed_values", "print_methods", "recipe_start"]


def _plain(docstring_text: str) -> str:
    """One line without reST's double backticks, as a terminal shows it."""
    return re.sub(r"``(.+?)``", r"\1", " ".join(docstring_text.split()))


def _yaml_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _usage(needed: bool, used: bool) -> str:
    return "required" if needed else ("optional" if used else "not used")


def allowed_values(spec: ParamSpec) -> str:
    """The values ``spec`` accepts, in the words its validation error would use."""
    if spec.choices:
        return " | ".join(spec.choices)
    if spec.type is bool:
        return "true | false"
    kind = "integer" if spec.type is int else "number"
    if spec.minimum is not None and spec.maximum is not None:
        return f"{spec.minimum:g} to {spec.maximum:g}"
    if spec.minimum is not None:
        return f"{kind} >= {spec.minimum:g}"
    if spec.maximum is not None:
        return f"{kind} <= {spec.maximum:g}"
    return f"any {kind}"


def recipe_start(method: MergeMethod) -> str:
    """A recipe using ``method`` with every parameter at its default, for the user to fill in."""
    lines = [f"method: {method.name}"]
    if method.params:
        lines.append("parameters:")
        lines += [f"  {spec.name}: {_yaml_value(spec.default)}" for spec in method.params]
    if method.accepts_base:
        lines.append("base_model: org/base" + ("" if method.needs_base else "   # optional"))
    lines.append("models:")
    for letter in "ab":
        lines += [f"  - model: org/fine-tuned-{letter}", f"    task: task_{letter}"]
        if method.uses_weights:
            lines.append("    weight: 1.0" + ("" if method.needs_weights else "   # optional"))
    return "\n".join(lines) + "\n"


def _overview() -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Merge methods (`hubmerge methods NAME` for one in full)", title_justify="left")
    for column in ("method", "base model", "weights", "parameters (default)", "what it does"):
        table.add_column(column, overflow="fold", no_wrap=column == "method")
    for method in list_methods():
        parameters = ", ".join(f"{spec.name}={_yaml_value(spec.default)}" for spec in method.params) or "none"
        table.add_row(
            method.name,
            _usage(method.needs_base, method.accepts_base),
            _usage(method.needs_weights, method.uses_weights),
            escape(parameters),
            escape(_plain(method.description)),
        )
    return table


def _details(method: MergeMethod, console: Console) -> None:
    from rich.markup import escape
    from rich.syntax import Syntax
    from rich.table import Table

    from .tables import print_table

    console.print(f"[bold]{method.name}[/bold]: {escape(method.pretty_name)}", highlight=False)
    if method.paper:
        console.print(method.paper, highlight=False)
    console.print(escape(_plain(method.description)), highlight=False)
    if method.max_models == method.min_models:
        inputs = f"exactly {method.min_models}"
    else:
        inputs = f"{method.min_models}" + (f" to {method.max_models}" if method.max_models else " or more")
    console.print(
        f"base model: {_usage(method.needs_base, method.accepts_base)}; "
        f"per-model weights: {_usage(method.needs_weights, method.uses_weights)}; models: {inputs}",
        highlight=False,
    )
    if method.params:
        table = Table(title="Parameters", title_justify="left")
        for column in ("parameter", "default", "allowed", "what it does"):
            table.add_column(column, overflow="fold", no_wrap=column in ("parameter", "default"))
        for spec in method.params:
            table.add_row(spec.name, _yaml_value(spec.default), allowed_values(spec), escape(spec.help))
        print_table(console, table)
    else:
        console.print("parameters: none")
    translations = [*method.peer_methods.values(), *method.peer_names.values()]
    if translations:
        console.print("From FusionBench or mergekit:")
        listed = Table.grid(padding=(0, 1))
        listed.add_column(justify="right", width=3)
        listed.add_column()
        for sentence in translations:
            listed.add_row("-", escape(sentence))
        console.print(listed, highlight=False)
    console.print("A recipe to start from:")
    console.print(Syntax(recipe_start(method), "yaml", theme="ansi_dark", background_color="default"))


def print_methods(console: Console, name: str | None = None) -> None:
    """Every method in one table, or ``name`` in full (UnknownMethodError names the known ones)."""
    from .tables import print_table

    if name is None:
        print_table(console, _overview())
    else:
        _details(get_method(name), console)
