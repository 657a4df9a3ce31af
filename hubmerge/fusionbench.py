"""Read FusionBench-style configs (method / modelpool / taskpool) as hubmerge Recipes.

A FusionBench run is configured by three Hydra groups; hubmerge accepts one YAML file holding them
together (as ``fusion_bench --cfg job`` prints the composed config, or written by hand) and converts
it once, here, into the one Recipe object. ``Recipe.from_yaml`` (so ``hubmerge plan`` / ``merge``)
calls this when the YAML has a ``modelpool`` mapping or a ``method`` mapping. Only what hubmerge
can do exactly is accepted; anything else is a RecipeError that says what and why.

* ``method``: a mapping with ``_target_`` (``fusion_bench.method.<Class>``) or ``name``, or just the
  name (``method: ties_merging``, FusionBench's defaults then apply):

  =========================================  ====================  ===================================
  FusionBench                                hubmerge              parameters
  =========================================  ====================  ===================================
  SimpleAverageAlgorithm / simple_average    simple_average        none
  WeightedAverageAlgorithm / weighted_average  weighted_average    ``weights`` (one per task, in
                                                                   modelpool order) -> each model's
                                                                   ``weight``; ``normalize``
  TaskArithmeticAlgorithm / task_arithmetic  task_arithmetic       ``scaling_factor``
  TiesMergingAlgorithm / ties_merging        ties                  ``scaling_factor``; ``threshold``
                                                                   -> ``density``; ``merge_func``
                                                                   sum / mean -> ``disjoint_merge``;
                                                                   ``remove_keys`` must be empty
  DareTaskArithmetic / dare/task_arithmetic  dare                  ``scaling_factor``; ``sparsity_ratio``
                                                                   -> ``drop_rate``; ``rescale``;
                                                                   ``only_on_linear_weights`` false
  DareSimpleAverage / dare/simple_average    dare                  as above, ``scaling_factor`` 1 / N
  DareTiesMerging / dare/ties_merging        dare, combine: ties   as above, and TIES's with
                                                                   ``threshold`` 100 (see below)
  =========================================  ====================  ===================================

  A config name keeps its group: ``dare/task_arithmetic`` is DARE, and a group not listed here
  (``singular_value_calibration/task_arithmetic``, ``opcm/ties_merging``) is refused, not read as
  the method its last part names. SlerpMergeAlgorithm and ModelStock are refused with how hubmerge's
  ``slerp`` and ``model_stock`` differ from them, so a user can choose to write that recipe.

  TIES ``threshold`` is, in FusionBench (``ties_merging_utils.topk_values_mask``), the share of each
  task vector's entries that is *kept*, by magnitude: a value above 1 is a percentage (the default
  20 keeps the top 20 %), a value in (0, 1] a fraction. It becomes ``density = threshold / 100``
  (or the fraction as is); values outside [0, 100] are refused. FusionBench trims each task vector
  over the whole flattened model; hubmerge trims tensor by tensor (as mergekit does), which keeps
  the same share of every tensor rather than of the model as a whole. ``merge_func: max`` has no
  hubmerge equivalent and is refused. ``show_pbar`` and ``inplace`` change nothing in the result
  and are ignored. DareTiesMerging trims each dropped task vector to its top ``threshold`` before
  the sign election; hubmerge's ``dare`` with ``combine: ties`` does not trim (as mergekit's
  ``dare_ties``), so only ``threshold: 100`` (no trim) is the same merge. On models with BatchNorm
  (ResNets), task arithmetic, TIES and DARE give its running statistics the fine-tunes' mean, where
  FusionBench applies task arithmetic and TIES to them as well, which can make a variance negative
  (``hubmerge.vision.families``).
* ``modelpool.models``: ``_pretrained_`` is the base model (``base_model``), as a repo id / path or a
  mapping with ``config_path``, ``pretrained_model_name_or_path`` or ``path`` (``pretrained: false``,
  a randomly initialised base, is refused); every other key is a task, its value the model the same
  way. An entry's ``dataset_name`` must be a known task (the registry's names) and gives the task's
  dataset when the taskpool names none. A ``ConvNextForImageClassificationPool`` gets
  ``target_modules: [convnext]`` (FusionBench's ``_fusion_bench_target_modules``); other pools are
  left to family detection. torchvision pools (``type: torchvision``, ``model_name: resnet50``) are
  refused: their models are built by torchvision, not read from files; export them with
  ``hubmerge export-resnet`` (``hubmerge.vision.export.export_torchvision_resnet``; ``--checkpoint``
  a fine-tune's ``torch.save`` file) and list the directories.
* ``taskpool.test_datasets``: per task, ``{_target_: datasets.load_dataset, path | _args_: [path,
  config], name, split}``; a taskpool that only names its datasets (Hydra ``defaults`` of
  ``/dataset/image_classification/test@test_datasets``) gets each name's dataset from the registry
  (unknown names are an ``UnknownTaskError`` listing the known ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from .errors import RecipeError
from .recipe import Recipe

__all__ = ["from_fusionbench", "is_fusionbench"]

_DARE = ("sparsity_ratio", "only_on_linear_weights", "rescale")
_TIES = ("scaling_factor", "threshold", "remove_keys", "merge_func")
# FusionBench class name or config name (lower case, with its group: dare/task_arithmetic is not
# task_arithmetic) -> (hubmerge method, FusionBench parameters accepted)
_METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "simpleaveragealgorithm": ("simple_average", ()),
    "simple_average": ("simple_average", ()),
    "weightedaveragealgorithm": ("weighted_average", ("weights", "normalize")),
    "weighted_average": ("weighted_average", ("weights", "normalize")),
    "linear/weighted_average": ("weighted_average", ("weights", "normalize")),
    "taskarithmeticalgorithm": ("task_arithmetic", ("scaling_factor",)),
    "task_arithmetic": ("task_arithmetic", ("scaling_factor",)),
    "tiesmergingalgorithm": ("ties", _TIES),
    "ties_merging": ("ties", _TIES),
    "daretaskarithmetic": ("dare", ("scaling_factor", *_DARE)),
    "dare/task_arithmetic": ("dare", ("scaling_factor", *_DARE)),
    "daresimpleaverage": ("dare", _DARE),
    "dare/simple_average": ("dare", _DARE),
    "daretiesmerging": ("dare", (*_DARE, *_TIES)),
    "dare/ties_merging": ("dare", (*_DARE, *_TIES)),
}
_SUPPORTED = ("SimpleAverageAlgorithm, WeightedAverageAlgorithm, TaskArithmeticAlgorithm, TiesMergingAlgorithm, "
              "DareTaskArithmetic, DareSimpleAverage, DareTiesMerging (with threshold 100)")
_SLERP = ("slerp", ("it interpolates the same way with the same 't', but falls back to linear interpolation only "
                    "for colinear tensors, where FusionBench does above DOT_THRESHOLD (0.9995)"))
_MODEL_STOCK = ("model_stock", ("it uses the mean pairwise cosine of the task vectors, where FusionBench takes the "
                                "cosine of their mean pairwise angle (the same for two fine-tunes)"))
# FusionBench methods that hubmerge has a close relative of, but not the same merge: (that method, how it differs)
_CLOSE = {"slerpmergealgorithm": _SLERP, "slerp/slerp": _SLERP,
          "modelstock": _MODEL_STOCK, "model_stock/model_stock": _MODEL_STOCK}
_HYDRA_KEYS = ("_target_", "name", "_recursive_", "_partial_")
_NO_EFFECT = ("show_pbar", "inplace")
_POOL_TARGETS = {"convnextforimageclassificationpool": ["convnext"]}
_MODEL_KEYS = ("pretrained_model_name_or_path", "config_path", "path")
_TIES_THRESHOLD = 20  # FusionBench's config/method/ties_merging.yaml


def is_fusionbench(data: Any) -> TypeGuard[Mapping[str, Any]]:
    """True for a mapping shaped like a FusionBench config (a ``modelpool`` or a ``method`` mapping)."""
    return isinstance(data, Mapping) and (
        isinstance(data.get("modelpool"), Mapping) or isinstance(data.get("method"), Mapping)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # YAML's true is an int to Python


def _density(threshold: Any) -> float:
    if not _is_number(threshold) or not 0 <= threshold <= 100:
        raise RecipeError(
            f"TIES 'threshold' is the share of each task vector kept: a percentage in (1, 100] or a "
            f"fraction in [0, 1], got {threshold!r}",
            field="method.threshold",
        )
    return float(threshold) / 100 if threshold > 1 else float(threshold)


def _method(config: Mapping[str, Any] | str, *, models: int) -> tuple[str, dict[str, Any]]:
    if isinstance(config, str):
        config = {"name": config}
    target = str(config.get("_target_") or config.get("name") or "")
    # a class path ends in the class; a config name keeps its group
    key = (target.rsplit(".", 1)[-1] if config.get("_target_") else target).lower()
    if key in _CLOSE:
        relative, difference = _CLOSE[key]
        raise RecipeError(
            f"FusionBench method {target!r} is not read from its config, as hubmerge's {relative} is not the same "
            f"merge: {difference}. To use {relative}, write a hubmerge recipe (`hubmerge methods {relative}` "
            "prints one to start from)",
            field="method",
        )
    if key not in _METHODS:
        raise RecipeError(
            f"FusionBench method {target!r} has no hubmerge equivalent; supported: {_SUPPORTED}", field="method"
        )
    method, accepted = _METHODS[key]
    params: dict[str, Any] = {}
    for name, value in config.items():
        if name in _HYDRA_KEYS or name in _NO_EFFECT or (name == "weights" and name in accepted):
            continue  # weights become each model's recipe weight
        if name not in accepted:
            raise RecipeError(
                f"FusionBench parameter '{name}' of {target} is not supported; accepted: "
                f"{', '.join(accepted) or 'none'}",
                field=f"method.{name}",
            )
        params[name] = value
    if "threshold" in accepted:
        _ties(params, target, dare=method == "dare")
    if method == "dare":
        _dare(params, key, models=models)
    return method, params


def _ties(params: dict[str, Any], target: str, *, dare: bool) -> None:
    """FusionBench's TIES parameters as hubmerge's (in place)."""
    if params.pop("remove_keys", None):
        raise RecipeError(
            "remove_keys is not supported: name the merged tensors with `target_modules` instead",
            field="method.remove_keys",
        )
    density = _density(params.pop("threshold", _TIES_THRESHOLD))
    merge_func = params.pop("merge_func", "sum")
    if merge_func not in ("sum", "mean"):
        raise RecipeError(
            f"merge_func {merge_func!r} has no hubmerge equivalent (sum or mean)", field="method.merge_func"
        )
    params["disjoint_merge"] = merge_func
    if not dare:
        params["density"] = density
    elif density < 1:
        raise RecipeError(
            f"{target} trims each dropped task vector to its top {density:.0%} by magnitude before the sign "
            "election; hubmerge's dare with combine: ties elects signs on the dropped vectors as they are (as "
            "mergekit's dare_ties does). Set threshold: 100 for that, or use ties_merging",
            field="method.threshold",
        )
    else:
        params["combine"] = "ties"
        params.setdefault("scaling_factor", 0.5)  # FusionBench's config/method/dare/ties_merging.yaml


def _dare(params: dict[str, Any], key: str, *, models: int) -> None:
    """FusionBench's DARE parameters as hubmerge's (in place)."""
    if params.pop("only_on_linear_weights", False):
        raise RecipeError(
            "only_on_linear_weights: true drops entries of nn.Linear weights only; hubmerge's dare drops entries "
            "of every merged tensor (name fewer with `target_modules`)",
            field="method.only_on_linear_weights",
        )
    if "sparsity_ratio" in params:
        ratio = params.pop("sparsity_ratio")
        if not _is_number(ratio) or not 0 <= ratio < 1:
            raise RecipeError(f"sparsity_ratio is the share of each task vector dropped, in [0, 1); got {ratio!r} "
                              "(it is hubmerge's drop_rate, at most 0.999)", field="method.sparsity_ratio")
        params["drop_rate"] = ratio
    if key in ("daresimpleaverage", "dare/simple_average"):
        params["scaling_factor"] = 1 / models  # FusionBench: DareTaskArithmetic with 1 / len(modelpool)


def _model_id(value: Any, task: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping):
        if value.get("pretrained") is False:
            raise RecipeError(
                "'pretrained: false' asks for a randomly initialised model, which cannot be merged from files",
                field=f"modelpool.models.{task}",
            )
        if "model_name" in value and not any(isinstance(value.get(k), str) for k in _MODEL_KEYS):
            raise RecipeError(
                f"torchvision model '{value['model_name']}' is built by torchvision, not read from files: export "
                "it with `hubmerge export-resnet ARCH DIR --checkpoint FILE` (a fine-tune's torch.save file) and "
                "list its directory instead",
                field=f"modelpool.models.{task}",
            )
        for key in _MODEL_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
    raise RecipeError(
        f"cannot tell which model {task!r} is: give a repo id, a path, or a mapping with "
        f"{' / '.join(_MODEL_KEYS)}; got {value!r}",
        field=f"modelpool.models.{task}",
    )


def _registry_dataset(name: str) -> dict[str, Any] | None:
    """The registry's dataset for a FusionBench dataset name; UnknownTaskError lists the known names."""
    from .vision.classnames import canonical_task, dataset_for

    spec = dataset_for(canonical_task(name))
    if spec is None:
        return None
    return {"path": spec.repo_id, "split": spec.split, **({"name": spec.config} if spec.config else {})}


def _dataset(config: Any, task: str) -> dict[str, Any] | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise RecipeError(
            f"expected a mapping like {{path: org/name, split: test}}, got {config!r}",
            field=f"taskpool.test_datasets.{task}",
        )
    args = config.get("_args_") or []
    if not isinstance(args, list):  # a string was read letter by letter: path 'h', name 'u'
        raise RecipeError(f"'_args_' must be a list like [org/name] (load_dataset's arguments), got {args!r}",
                          field=f"taskpool.test_datasets.{task}._args_")
    path = config.get("path") or (args[0] if args else None)
    name = config.get("name") or (args[1] if len(args) > 1 else None)
    if not isinstance(path, str):
        raise RecipeError(f"the test dataset of {task!r} names no path", field=f"taskpool.test_datasets.{task}")
    out: dict[str, Any] = {"path": path, "split": config.get("split") or "test"}
    if name:
        out["name"] = name
    return out


def _taskpool_datasets(taskpool: Any, tasks: list[str]) -> dict[str, dict[str, Any]]:
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
    found = {name: _registry_dataset(name) for name in named}  # unknown names fail here, listing the known
    return {task: spec for task in tasks if (spec := found.get(task)) is not None}


def from_fusionbench(
    data: Mapping[str, Any], *, base_dir: Path | None = None, source: str | None = None
) -> Recipe:
    """Convert a FusionBench config to a Recipe (what is accepted is in the module docstring).

    Args:
        data: the parsed YAML (``method``, ``modelpool``, optional ``taskpool``; other keys, such as
            FusionBench's ``fabric`` or ``merged_model_save_path``, are ignored).
        base_dir: where relative model paths are taken from.
        source: the file, for messages.

    Returns:
        The validated Recipe.

    Raises:
        RecipeError: what FusionBench would do differently or cannot be said in a recipe (named).
        UnknownTaskError: a ``dataset_name`` or taskpool dataset name that is not known.

    Example:
        >>> recipe = from_fusionbench(yaml.safe_load(open("fusion_bench_config.yaml")))
    """
    try:
        return _convert(data, base_dir=base_dir)
    except RecipeError as exc:
        if source and exc.source is None:
            exc.append_to_message(f"(in FusionBench config {source})")
        raise


def _convert(data: Mapping[str, Any], *, base_dir: Path | None) -> Recipe:
    method_config = data.get("method")
    if not isinstance(method_config, (Mapping, str)):
        raise RecipeError(
            "a FusionBench config needs a 'method' (a mapping with _target_ or name)", field="method"
        )
    pool = data.get("modelpool")
    if not isinstance(pool, Mapping):
        raise RecipeError("a FusionBench config needs a 'modelpool' mapping with 'models'", field="modelpool")
    if str(pool.get("type") or "") == "torchvision":
        raise RecipeError(
            "torchvision model pools build their models with torchvision: export them with "
            "`hubmerge export-resnet ARCH DIR --checkpoint FILE` (a fine-tune's torch.save file) and list the "
            "directories",
            field="modelpool.type",
        )
    models_config = pool.get("models")
    if not isinstance(models_config, Mapping) or not models_config:
        raise RecipeError("a FusionBench config needs 'modelpool.models' ({_pretrained_: ..., task: repo})",
                          field="modelpool.models")
    base = models_config.get("_pretrained_")
    tuned = {str(task): value for task, value in models_config.items() if task != "_pretrained_"}  # `1:` is an int
    tasks = list(tuned)
    method, parameters = _method(method_config, models=len(tasks))
    datasets = _taskpool_datasets(data.get("taskpool"), tasks)
    weights = method_config.get("weights") if isinstance(method_config, Mapping) else None
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(tasks)
                                or not all(map(_is_number, weights))):
        raise RecipeError(f"'weights' must list one number per task ({len(tasks)}: {', '.join(tasks)}), got "
                          f"{weights!r}", field="method.weights")
    models = []
    for i, (task, value) in enumerate(tuned.items()):
        entry: dict[str, Any] = {"model": _model_id(value, task), "task": task}
        if weights is not None:
            entry["weight"] = weights[i]
        dataset_name = value.get("dataset_name") if isinstance(value, Mapping) else None
        named = _registry_dataset(str(dataset_name)) if dataset_name else None
        if task in datasets or named is not None:
            entry["dataset"] = datasets.get(task) or named
        models.append(entry)
    recipe: dict[str, Any] = {"method": method, "parameters": parameters, "models": models}
    if base is not None:
        recipe["base_model"] = _model_id(base, "_pretrained_")
    target = str(pool.get("_target_") or "").rsplit(".", 1)[-1].lower()
    if target in _POOL_TARGETS:
        recipe["target_modules"] = _POOL_TARGETS[target]
    return Recipe.from_dict(recipe, base_dir=base_dir)
