"""The app's form as data: Recipe <-> the values of its fields, with no Gradio in sight.

The web form has a base model, a table of models (model, task, dataset, weight, the dataset's label and image
columns), a method with its parameters (one field per ``ParamSpec`` of the methods registry), a dtype and a
device. These functions turn a preset into field values and field values into a validated Recipe, so the app's
handlers stay thin and the conversion is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import RecipeError
from ..methods import MergeMethod, get_method, list_methods
from ..recipe import DatasetRef, ModelEntry, Recipe, read_yaml

__all__ = [
    "AS_INPUTS",
    "DEVICES",
    "DTYPES",
    "MODEL_COLUMNS",
    "FormValues",
    "ParamField",
    "form_values",
    "param_fields",
    "recipe_from_form",
]

#: The models table's columns; the dataset's columns come last, so a row of the first four (an API caller's) reads as
#: it did before they were added.
MODEL_COLUMNS = ("model", "task", "dataset", "weight", "label column", "image column")
AS_INPUTS = "as inputs"
DTYPES = (AS_INPUTS, "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ParamField:
    """One method parameter as a form field: which method, which parameter, and its schema."""

    method: str
    spec_name: str
    kind: str  # checkbox | integer | number | choice | text
    default: Any
    label: str
    info: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


def _field(method: MergeMethod, spec: Any) -> ParamField:
    if spec.type is bool:
        kind = "checkbox"
    elif spec.choices is not None:
        kind = "choice"
    elif spec.type is int:
        kind = "integer"
    elif spec.type is float:
        kind = "number"
    else:
        kind = "text"
    return ParamField(method.name, spec.name, kind, spec.default, spec.name.replace("_", " "), spec.help,
                      spec.choices, spec.minimum, spec.maximum)


def param_fields() -> dict[str, list[ParamField]]:
    """Every registered method -> its parameters as fields, in registry order (new methods included)."""
    return {method.name: [_field(method, spec) for spec in method.params] for method in list_methods()}


@dataclass(frozen=True)
class FormValues:
    """What the form shows for a recipe."""

    base_model: str
    models: list[list[Any]]  # rows of MODEL_COLUMNS
    method: str
    parameters: dict[str, Any]
    dtype: str
    device: str
    name: str


def form_values(recipe: Recipe) -> FormValues:
    """A recipe (a preset, an uploaded YAML) as field values."""
    return FormValues(
        base_model=str(recipe.base_model) if recipe.base_model is not None else "",
        models=[_row(entry) for entry in recipe.models],
        method=recipe.method,
        parameters=get_method(recipe.method).resolve_params(recipe.parameters),
        dtype=recipe.dtype or AS_INPUTS,
        device=recipe.device,
        name=recipe.name or "",
    )


def _row(entry: ModelEntry) -> list[Any]:
    """One input as a row of MODEL_COLUMNS; the dataset's columns in their own cells (blank: not named)."""
    ref = entry.dataset
    dataset = "" if ref is None else _dataset_cell(replace(ref, label_column=None, image_column=None))
    columns = ["", ""] if ref is None else [ref.label_column or "", ref.image_column or ""]
    return [str(entry.model), entry.task or "", dataset, "" if entry.weight is None else entry.weight, *columns]


def _dataset_cell(ref: DatasetRef) -> str:
    """``path[:config]:split`` where it reads back as ``ref``, else the recipe's mapping on one line: a merge
    from the form then keeps whole a path with a colon of its own (``/data/a:b``), which the one line splits."""
    return ref.spec if ref.reads_back(ref.spec) else ref.one_line


def _dataset(value: Any, row: int, columns: Mapping[str, Any]) -> Any:
    """A dataset cell as the recipe takes it: the one line, or a mapping written ``{path: ..., label_column: ...}``
    (YAML flow style, as :func:`form_values` shows a path with a colon of its own), which the recipe then checks; with ``columns``
    (recipe key -> cell) named, the mapping with them."""
    text = str(value).strip()
    dataset: Any = text
    if text.startswith("{"):
        try:  # the recipe's own reading: a cell of aliases of aliases would write out gigabytes in an error's repr
            dataset = read_yaml(text)
        except RecipeError as exc:
            raise RecipeError(f"models row {row}: the dataset {text[:200]!r} is no YAML mapping ({exc}); write it "
                              "as {path: org/name, split: test}, its columns in their own cells") from None
    named = {key: str(cell).strip() for key, cell in columns.items() if not _blank(cell)}
    return _with_columns(dataset, row, named) if named else dataset


def _with_columns(dataset: Any, row: int, named: Mapping[str, str]) -> Any:
    """``dataset`` as the recipe's mapping naming the ``named`` columns; one also named in the dataset's own
    mapping otherwise is refused, as the two would leave the evaluation to guess."""
    ref = DatasetRef.parse(dataset, field=f"models[{row - 1}].dataset")
    for key, name in named.items():
        if getattr(ref, key) not in (None, name):
            raise RecipeError(f"models row {row}: the dataset names {key} {getattr(ref, key)!r} and its "
                              f"{key.replace('_', ' ')} cell {name!r}: name it once, in the cell")
    return replace(ref, **named).to_yaml()


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _weight(value: Any, row: int) -> float | None:
    if _blank(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"models row {row}: weight must be a number, got {value!r}") from None


def _coerced(method: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Number fields give floats: whole numbers become ints where the schema wants one; blanks are dropped."""
    specs = {spec.name: spec for spec in get_method(method).params}
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        if _blank(value):
            continue
        spec = specs.get(key)
        if spec is not None and spec.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


def recipe_from_form(
    *,
    base_model: str | None,
    models: Sequence[Sequence[Any]],
    method: str,
    parameters: Mapping[str, Any],
    dtype: str | None = None,
    device: str | None = None,
    name: str | None = None,
) -> Recipe:
    """The recipe the form describes; blank rows are ignored, blank cells mean "not given".

    Raises:
        RecipeError (and subclasses): what is wrong, in the recipe's own words.
    """
    entries: list[dict[str, Any]] = []
    for number, row in enumerate(models, start=1):
        cells = list(row) + [None] * (len(MODEL_COLUMNS) - len(row))
        model, task, dataset, weight, label_column, image_column = cells[: len(MODEL_COLUMNS)]
        columns = {"label_column": label_column, "image_column": image_column}
        if all(_blank(c) for c in (model, task, dataset, weight, *columns.values())):
            continue
        if _blank(model):
            raise RecipeError(f"models row {number}: give a model (repo id[@revision] or a local path)")
        entry: dict[str, Any] = {"model": str(model).strip()}
        if not _blank(task):
            entry["task"] = str(task).strip()
        if not _blank(dataset):
            entry["dataset"] = _dataset(dataset, number, columns)
        elif not all(_blank(c) for c in columns.values()):
            raise RecipeError(f"models row {number}: a label or image column is one of the task's evaluation "
                              "dataset: give the dataset too")
        if (value := _weight(weight, number)) is not None:
            entry["weight"] = value
        entries.append(entry)
    if not entries:
        raise RecipeError("add at least one model to merge (a repo id per row of the models table)")
    if not isinstance(parameters, Mapping):  # the form sends one; an API caller may send JSON text or a list
        raise RecipeError(f"parameters must be a mapping like {{\"scaling_factor\": 0.3}}, got {parameters!r}",
                          field="parameters")
    data: dict[str, Any] = {"method": method, "models": entries, "parameters": _coerced(method, parameters)}
    if not _blank(base_model):
        data["base_model"] = str(base_model).strip()
    if dtype and dtype != AS_INPUTS:
        data["dtype"] = dtype
    if device:
        data["device"] = device
    if not _blank(name):
        data["name"] = str(name).strip()
    return Recipe.from_dict(data, source="the app's form")
