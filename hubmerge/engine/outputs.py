"""A finished output, read back: its recipe, once the files its indexes name are all there."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelFilesNotFoundError, RecipeError, WeightsError, listed
from ..json_files import read_json_file
from ..recipe import RECIPE_FILE, Recipe, load_recipe
from ..vision.heads import HEADS_INDEX
from ..weights.index import INDEX_FILE, SINGLE_FILE
from ..weights.writer import check_output

HEADS_DIR = "heads"


def check_merge_output(target: Path, *, overwrite: bool, keep: Mapping[Path, str] | None = None) -> None:
    """``check_output`` for a merge: what ``overwrite`` may replace is an earlier output, a folder holding
    its recipe, never a folder of other files (``OutputNotOursError``)."""
    check_output(target, overwrite=overwrite, keep=keep, mark=RECIPE_FILE)


def check_output_folder(output: str | Path) -> Path:
    """``output``'s recipe file, once ``output`` is a folder a merge wrote: what reports, a card and a push
    are for.

    Raises:
        ModelFilesNotFoundError: ``output`` is no folder. RecipeError: it holds no ``hubmerge_recipe.yaml``.
    """
    path = Path(output) / RECIPE_FILE
    if not Path(output).is_dir():
        what = "is a file" if Path(output).exists() else "does not exist"
        raise ModelFilesNotFoundError(f"'{output}' {what}: give the folder `hubmerge merge` wrote", model=str(output))
    if not path.is_file():
        raise RecipeError(f"'{output}' holds no {RECIPE_FILE}; is it an output of `hubmerge merge`?")
    return path


def read_output_recipe(output: str | Path) -> Recipe:
    """The recipe a merged output records (every input pinned to its commit), once the output is whole:
    its card and a push describe it, so a head or shard deleted since the merge must not go unseen.

    Raises:
        RecipeError: ``output`` holds no ``hubmerge_recipe.yaml``: it is no output of a merge.
        ModelFilesNotFoundError: ``output`` is no folder, or a file its indexes name is missing.
    """
    path = check_output_folder(output)
    tasks = _json_object(Path(output) / HEADS_INDEX).get("tasks")
    if missing := _missing_output_files(Path(output), tasks):
        raise ModelFilesNotFoundError(
            f"'{output}' is incomplete: {listed(missing, 5)} {'is' if len(missing) == 1 else 'are'} missing "
            "(deleted since the merge?); merge it again, or restore them", model=str(output)
        )
    recipe = load_recipe(path)
    if isinstance(tasks, dict):
        recipe.check_heads(list(tasks), output)
    return recipe


def _json_object(path: Path) -> dict[str, Any]:
    """An output's index, or {} when it is absent or no JSON object: whoever reads it next refuses it in its
    own words."""
    try:
        data = read_json_file(path, ValueError)
    except (OSError, ValueError, WeightsError):
        return {}
    return data if isinstance(data, dict) else {}


def _missing_output_files(directory: Path, tasks: object) -> list[str]:
    """The files an output's indexes name (each task's head, from ``tasks`` of its heads index; the weight
    shards) that are not there."""
    named = [str(f) for task in (tasks.values() if isinstance(tasks, dict) else ()) if isinstance(task, dict)
             for f in task.get("files", [])]
    if (directory / INDEX_FILE).is_file():
        weight_map = _json_object(directory / INDEX_FILE).get("weight_map")
        named += sorted({str(f) for f in weight_map.values()}) if isinstance(weight_map, dict) else []
    else:
        named.append(SINGLE_FILE)
    return [name for name in named if not (directory / name).is_file()]
