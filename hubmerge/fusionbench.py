"""Read FusionBench-style configs (method / modelpool / taskpool) as hubmerge Recipes.

A FusionBench run is configured by three Hydra groups; hubmerge accepts a YAML file holding them
together (as ``fusion_bench`` composes them) and converts it once, here, into the one Recipe
object. Only what hubmerge can do exactly is accepted; anything else is a RecipeError that says so.

* ``method``: ``_target_`` (or ``name``) SimpleAverageAlgorithm / simple_average,
  WeightedAverageAlgorithm / weighted_average (``weights``, ``normalize``), TaskArithmeticAlgorithm
  / task_arithmetic (``scaling_factor``), TiesMergingAlgorithm / ties_merging (``scaling_factor``,
  ``threshold`` = percent of each task vector kept, ``merge_func`` sum or mean, empty
  ``remove_keys``). FusionBench's TIES trims across the whole flattened model; hubmerge trims each
  tensor (as mergekit does), which keeps the same fraction per tensor rather than overall.
* ``modelpool.models``: ``_pretrained_`` is the base model, as a string or a mapping with
  ``config_path`` / ``pretrained_model_name_or_path`` / ``path``; every other key is a task.
* ``taskpool.test_datasets``: per task, ``{_target_: datasets.load_dataset, path | _args_: [path,
  config], split}``; a taskpool that only names the tasks (Hydra ``defaults``) gets the canonical
  datasets of the class-name registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .recipe import Recipe

__all__ = ["from_fusionbench", "is_fusionbench"]

_METHODS = {
    "simpleaveragealgorithm": "simple_average",
    "simple_average": "simple_average",
    "weightedaveragealgorithm": "weighted_average",
    "weighted_average": "weighted_average",
    "taskarithmeticalgorithm": "task_arithmetic",
    "task_arithmetic": "task_arithmetic",
    "tiesmergingalgorithm": "ties",
    "ties_merging": "ties",
}
_POOL_TARGETS = {"convnextforimageclassificationpool": ["convnext"]}
_IGNORED = {"_target_", "name", "_recursive_", "weights"}


def is_fusionbench(data: Any) -> bool:
    """True for a mapping shaped like a FusionBench config (a ``modelpool`` or a ``method`` mapping)."""
    return isinstance(data, Mapping) and (
        isinstance(data.get("modelpool"), Mapping) or isinstance(data.get("method"), Mapping)
    )


def _method(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    target = str(config.get("_target_") or config.get("name") or "")
    key = target.rsplit(".", 1)[-1].lower()
    if key not in _METHODS:
        raise RecipeError(
            f"FusionBench method {target!r} has no hubmerge equivalent; supported: SimpleAverageAlgorithm, "
            "WeightedAverageAlgorithm, TaskArithmeticAlgorithm, TiesMergingAlgorithm",
            field="method",
        )
    method = _METHODS[key]
    params = {k: v for k, v in config.items() if k not in _IGNORED}
    if method == "ties":
        if params.pop("remove_keys", None):
            raise RecipeError("remove_keys is not supported; use target_modules to choose what is merged", field="method")
        threshold = params.pop("threshold", 20)
        params["density"] = float(threshold) / 100 if float(threshold) > 1 else float(threshold)
        merge_func = params.pop("merge_func", "sum")
        if merge_func not in ("sum", "mean"):
            raise RecipeError(f"merge_func {merge_func!r} is not supported (sum or mean)", field="method")
        params["disjoint_merge"] = merge_func
    return method, params


def _model_id(value: Any, task: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("pretrained_model_name_or_path", "config_path", "path"):
            if isinstance(value.get(key), str):
                return value[key]
    raise RecipeError(f"cannot tell which model {task!r} is: {value!r}", field=f"modelpool.models.{task}")


def _dataset(config: Any, task: str) -> dict[str, Any] | None:
    if not isinstance(config, Mapping):
        return None
    args = list(config.get("_args_") or [])
    path = config.get("path") or (args[0] if args else None)
    name = config.get("name") or (args[1] if len(args) > 1 else None)
    if not isinstance(path, str):
        raise RecipeError(f"the test dataset of {task!r} names no path", field=f"taskpool.test_datasets.{task}")
    out: dict[str, Any] = {"path": path, "split": config.get("split") or "test"}
    if name:
        out["name"] = name
    return out


def _taskpool_datasets(taskpool: Any, tasks: list[str]) -> dict[str, dict[str, Any]]:
    from .vision.classnames import dataset_for

    if not isinstance(taskpool, Mapping):
        return {}
    explicit = taskpool.get("test_datasets")
    if isinstance(explicit, Mapping):
        return {t: d for t in tasks if (d := _dataset(explicit.get(t), t)) is not None}
    named: list[str] = []
    for entry in taskpool.get("defaults") or []:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                if "test_datasets" in str(key) and isinstance(value, list):
                    named += [str(v) for v in value]
    out = {}
    for task in tasks:
        if task in named and (spec := dataset_for(task)) is not None:
            out[task] = {"path": spec.repo_id, "split": spec.split, **({"name": spec.config} if spec.config else {})}
    return out


def from_fusionbench(data: Mapping[str, Any], *, base_dir: Path | None = None, source: str | None = None) -> Recipe:
    """Convert a FusionBench config to a Recipe (see the module docstring for what is accepted)."""
    method_config = data.get("method")
    if not isinstance(method_config, Mapping):
        raise RecipeError("a FusionBench config needs a 'method' mapping", source=source)
    method, parameters = _method(method_config)
    pool = data.get("modelpool")
    models_config = pool.get("models") if isinstance(pool, Mapping) else None
    if not isinstance(models_config, Mapping) or not models_config:
        raise RecipeError("a FusionBench config needs 'modelpool.models'", field="modelpool", source=source)
    base = models_config.get("_pretrained_")
    tasks = [str(t) for t in models_config if t != "_pretrained_"]
    datasets = _taskpool_datasets(data.get("taskpool"), tasks)
    weights = method_config.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(tasks)):
        raise RecipeError(f"'weights' must list one number per task ({len(tasks)})", field="method.weights", source=source)
    models = []
    for i, task in enumerate(tasks):
        entry: dict[str, Any] = {"model": _model_id(models_config[task], task), "task": task}
        if weights is not None:
            entry["weight"] = weights[i]
        if task in datasets:
            entry["dataset"] = datasets[task]
        models.append(entry)
    target = str(pool.get("_target_") or "").rsplit(".", 1)[-1].lower()  # type: ignore[union-attr]
    recipe: dict[str, Any] = {"method": method, "parameters": parameters, "models": models}
    if base is not None:
        recipe["base_model"] = _model_id(base, "_pretrained_")
    if target in _POOL_TARGETS:
        recipe["target_modules"] = _POOL_TARGETS[target]
    return Recipe.from_dict(recipe, base_dir=base_dir, source=source)
