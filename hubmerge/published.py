"""An output as it is published: its local inputs named without this machine's paths.

A merged output names its local inputs (models, datasets) by absolute paths: its later commands (``card``,
``evaluate``, ``push``) read them again from there. Its published copy (the card, the recipe and the reports of
a push) names each by its path below the inputs' common parent folder instead (``./base``, ``./data/eurosat``),
which tells a reader which folder it was without publishing the home folder, user name or layout of the
machine that merged. Hub inputs stay as they are (repo id and commit).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .evaluation.report import EVAL_COMPARISON_FILE, EVAL_SCOPE_FILE
from .json_files import read_json_file
from .recipe import RECIPE_FILE, DatasetRef, Recipe, shared_names
from .vision.heads import HEADS_INDEX

__all__ = ["LOCAL_FOLDERS", "PublishedNames", "has_local_folders", "published_comparison", "published_files",
           "published_names", "published_scope", "read_output_json", "scope_datasets"]

#: What the card and the published recipe say where some inputs were local folders.
LOCAL_FOLDERS = ("Some inputs were local folders, not on the Hub: the recipe names each ./... by its path below "
                 "their common parent folder on the machine that merged, so it merges again only where those "
                 "folders are put beside it, laid out so.")


@dataclass(frozen=True)
class PublishedNames:
    """How an output's published copy names its local inputs (``published_names``).

    Attributes:
        folders: each local folder (model, dataset) -> its published name, ``./...``.
        recipe: the output's recipe with those names.
        refs: each input as the output's recipe names it (and ``hubmerge_heads.json``, and an untasked input's
            row of ``eval_comparison.json``) -> as ``recipe`` names it.
    """

    folders: dict[Path, str]
    recipe: Recipe
    refs: dict[str, str]


def published_names(recipe: Recipe, scope: Mapping[str, Any]) -> PublishedNames:
    """How an output's published copy names each local folder it was made from: its recipe's models and
    datasets, and those its results were measured on (``scope``, its ``eval_scope.json``)."""
    measured = [Path(d.path).expanduser() for d in scope_datasets(scope).values() if d.is_local]
    folders = shared_names([*recipe.local_paths, *measured])
    shared = recipe.shared(folders)
    refs = {str(ref): str(published) for ref, published in zip(recipe.inputs, shared.inputs)}
    return PublishedNames(folders, shared, refs)


def published_scope(scope: Mapping[str, Any], names: Mapping[Path, str]) -> dict[str, Any]:
    """``eval_scope.json`` with each local dataset by its name in ``names`` (``published_names``)."""
    datasets = scope_datasets(scope)
    return {task: where | {"dataset": datasets[task].shared(names).spec} if task in datasets else where
            for task, where in scope.items()}


def has_local_folders(recipe: Recipe) -> bool:
    """Whether a model or dataset of ``recipe`` is a local folder (a Hugging Face cache copy is a Hub commit)."""
    return any(ref.path is not None and not ref.hub_copy for ref in recipe.inputs) or any(
        e.dataset.is_local for e in recipe.models if e.dataset)


def published_files(output: Path, recipe: Recipe) -> dict[str, bytes]:
    """The files of ``output`` that name its local inputs (``recipe``, the output's own), as a push commits
    them: the recipe, ``eval_scope.json``, ``eval_comparison.json`` and ``hubmerge_heads.json``, with every
    local folder by its published name; {} where no input is local. The output keeps its files as they are.

    Raises:
        RecipeError: one of those files is no JSON object.
    """
    scope = read_output_json(output / EVAL_SCOPE_FILE) or {}
    published = published_names(recipe, scope)
    if not published.folders:
        return {}
    renamed = published.refs
    note = ("".join(f"# {line}\n" for line in textwrap.wrap(LOCAL_FOLDERS, 100))
            if has_local_folders(published.recipe) else "")
    files = {RECIPE_FILE: note + published.recipe.to_yaml()}
    if scope:
        files[EVAL_SCOPE_FILE] = _json_text(published_scope(scope, published.folders))
    heads = read_output_json(output / HEADS_INDEX)
    if heads is not None and isinstance(heads.get("tasks"), dict):
        heads["tasks"] = {task: head | {"model": renamed[head["model"]]}
                          if isinstance(head, dict) and str(head.get("model")) in renamed else head
                          for task, head in heads["tasks"].items()}
        files[HEADS_INDEX] = _json_text(heads)
    comparison = read_output_json(output / EVAL_COMPARISON_FILE)
    if comparison is not None:
        files[EVAL_COMPARISON_FILE] = _json_text(published_comparison(comparison, renamed))
    return {name: text.encode() for name, text in files.items()}


def published_comparison(comparison: dict[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``eval_comparison.json`` with each fine-tune's row by its published name: an input without a task is
    keyed by its path (``PublishedNames.refs``)."""
    finetuned = comparison.get("finetuned")
    if not isinstance(finetuned, dict):
        return comparison
    return comparison | {"finetuned": {renamed.get(label, label): row for label, row in finetuned.items()}}


def scope_datasets(scope: Mapping[str, Any], named: Mapping[str, DatasetRef] | None = None
                   ) -> dict[str, DatasetRef]:
    """The dataset each task of ``eval_scope.json`` was measured on, with the columns its entry names (none for
    an entry it cannot read). An entry that spells the dataset ``named`` gives for its task (the recipe's, as
    the recipe or an older output spelled it) is that one, with the recipe's columns where it has no column keys:
    an output from before the entries named their columns (a null key: measured with none named)."""
    found = {}
    for task, where in scope.items():
        recorded = where.get("dataset") if isinstance(where, dict) else None
        if not isinstance(recorded, str) or not recorded.strip():
            continue
        label, image = (name if isinstance(name := where.get(key), str) and name.strip() else None
                        for key in ("label_column", "image_column"))
        own = (named or {}).get(task)
        if own is not None and recorded in _spellings(own):
            recorded_columns = "label_column" in where or "image_column" in where
            found[task] = replace(own, label_column=label, image_column=image) if recorded_columns else own
            continue
        try:
            found[task] = replace(DatasetRef.parse(recorded), label_column=label, image_column=image)
        except RecipeError:
            continue
    return found


def _spellings(dataset: DatasetRef) -> tuple[str, ...]:
    """How ``eval_scope.json`` spells ``dataset``: as the recipe does, or as older outputs did (``path/config:split``)."""
    return (dataset.spec, f"{dataset.path}/{dataset.name}:{dataset.split}" if dataset.name else dataset.spec)


def read_output_json(path: Path) -> dict[str, Any] | None:
    """One of an output's JSON files (config, heads index, reports), each an object; None when absent. A
    broken one, or one holding another value (a list, edited by hand), is a ``RecipeError`` naming it: the
    card and the push read it as an object."""
    data = read_json_file(path, lambda problem: RecipeError(f"{path} is {problem}"))
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{path} is not a JSON object (it holds a {type(data).__name__})")
    return data


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
