"""Read every input's headers and decide, for every tensor, how the output gets it: merged, averaged,
copied, kept as a task's head, re-initialised or skipped. Anything that would fail later fails here."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from ..errors import (
    DtypeMismatchError,
    MissingTensorError,
    PlanError,
    ShapeMismatchError,
    UnsupportedArchitectureError,
    UnsupportedDtypeError,
)
from ..fusionbench import from_fusionbench, is_fusionbench
from ..json_files import parse_json
from ..methods import MergeMethod, get_method
from ..recipe import ModelEntry, ModelRef, Recipe, load_recipe
from ..vision.families import Family, detect_family, is_running_statistic, model_layout
from ..vision.heads import HeadDecision, decide_head, head_seed
from ..weights.dtypes import DTYPES, common_float, is_float, is_integer
from ..weights.index import ModelWeights, open_weights
from ..weights.sources import LocalSource, WeightSource
from .plans import HeadPlan, InputModel, MergePlan, TensorPlan, merged_prefixes

log = logging.getLogger(__name__)

_OUT_DTYPE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def open_source(ref: ModelRef, *, token: str | None = None, endpoint: str | None = None) -> WeightSource:
    """Open ``ref``: a local directory, or a Hub repo pinned to the commit its revision points to."""
    if ref.path is not None:
        return LocalSource(ref.path)
    from ..hub.source import HubSource  # lazy: plain local merges never import the HTTP stack

    assert ref.repo_id is not None
    return HubSource(ref.repo_id, revision=ref.revision, token=token, endpoint=endpoint)


def _open_inputs(
    recipe: Recipe, token: str | None, endpoint: str | None
) -> list[tuple[str, ModelRef, Literal["base", "model"], ModelEntry | None, WeightSource]]:
    wanted: list[tuple[str, ModelRef, Literal["base", "model"], ModelEntry | None]] = []
    # The plan keys inputs by label: a task named as another input would be ('base', 'model1') leaves that
    # input the recipe's name for it, as one label for two hid one's missing tensors (a KeyError at the merge);
    # brackets are in no task's name.
    tasks = set(recipe.tasks)
    if recipe.base_model is not None:
        label = next(name for name in ("base", "base_model", "[base_model]") if name not in tasks)
        wanted.append((label, recipe.base_model, "base", None))
    for i, entry in enumerate(recipe.models):
        untasked = f"model{i}" if f"model{i}" not in tasks else f"models[{i}]"
        wanted.append((entry.task or untasked, entry.model, "model", entry))
    with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
        futures = [pool.submit(open_source, ref, token=token, endpoint=endpoint) for _, ref, _, _ in wanted]
        sources: list[WeightSource] = []
        error: BaseException | None = None
        for future in futures:
            try:
                sources.append(future.result())
            except BaseException as exc:  # keep going so every opened source is closed
                error = error or exc
        if error is not None:
            for source in sources:
                source.close()
            raise error
    return [(label, ref, role, entry, source) for (label, ref, role, entry), source in zip(wanted, sources)]


def _in_targets(name: str, prefixes: Sequence[str]) -> bool:
    if not prefixes:
        return True
    for prefix in prefixes:
        p = prefix.rstrip(".")
        if name == p or name.startswith(p + "."):
            return True
    return False


def _layout_order(weights: ModelWeights, names: Sequence[str]) -> list[str]:
    """``names`` in the order they sit in ``weights``' files: sequential reads, fewest seeks."""
    position = {file: i for i, file in enumerate(weights.files)}
    return sorted(names, key=lambda n: (position[weights.tensors[n].file], weights.tensors[n].offset))


def _out_dtype(code: str, recipe: Recipe, merged: str | None = None) -> str:
    """The dtype a tensor stored as ``code`` is written in: the recipe's for floats when it names one; else
    a float copied beside merged tensors (``merged``) in one that holds both, so that a float16 fine-tune's
    head, beside a backbone merged in float32, does not leave the output mixed (and unusable as one)."""
    if not is_float(code):
        return code
    if recipe.dtype is not None:
        return _OUT_DTYPE_CODES[recipe.dtype]
    return common_float((code, merged)) if merged is not None else code


def plan(
    recipe: Recipe | Mapping[str, Any] | str | Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    match_labels: Literal["name", "position"] = "name",
) -> MergePlan:
    """Read headers only and decide, for every tensor, how the output gets it.

    Args:
        recipe: a ``Recipe``; the dict a recipe file holds; or the path of a recipe file (hubmerge or
            FusionBench YAML).
        token: Hub token for private inputs (never logged).
        endpoint: the Hub to read repos from (default: ``HF_ENDPOINT`` or huggingface.co).
        match_labels: how the evaluation will meet each task's dataset classes (``"position"``: the
            local datasets' names may differ from the heads'; see ``hubmerge.vision.heads.decide_head``).

    Returns:
        A ``MergePlan``; its inputs stay open until ``execute`` finishes (or ``close_plan``).

    Raises:
        PlanError: tensors missing, shapes or dtype kinds that disagree, unknown dtypes, target
            prefixes that match nothing — every offending tensor is listed in one error.
        WeightsError: corrupt or missing files. HubError: unreachable or unknown repos.

    Example:
        >>> merge_plan = plan("recipe.yaml")
        >>> merge_plan.bytes_to_read
    """
    recipe = as_recipe(recipe)
    method = get_method(recipe.method)
    opened = _open_inputs(recipe, token, endpoint)
    try:
        inputs: list[InputModel] = []
        for label, ref, role, entry, source in opened:
            inputs.append(InputModel(label, ref, role, entry, open_weights(source), _read_config(source)))
        return _plan_from_inputs(recipe, method, inputs, match_labels)
    except BaseException:
        for *_, source in opened:
            source.close()
        raise


def as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """A recipe as ``plan`` and ``merge`` take it: a Recipe, the dict a recipe file holds, or its path. A
    FusionBench config's dict is converted as its file is (``Recipe.from_dict`` refused its ``modelpool``)."""
    if isinstance(recipe, Recipe):
        return recipe
    if is_fusionbench(recipe):
        return from_fusionbench(recipe)
    return Recipe.from_dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe)


def _read_config(source: WeightSource) -> dict[str, Any] | None:
    if "config.json" not in source.list_files():
        return None
    if not source.owns("config.json"):  # the output's config.json is made from it, and may be published
        raise PlanError(f"{source.where('config.json')} links to a file outside the model's folder, which would be "
                        "published with the merge; put the file itself there")
    where = source.where("config.json")
    config = parse_json(source.read_file("config.json"), lambda problem: PlanError(f"{where} is {problem}"))
    if not isinstance(config, dict):
        raise PlanError(f"{source.where('config.json')} is not a JSON object")
    return config


def _detect_family(inputs: Sequence[InputModel]) -> Family | None:
    """The inputs' common family, or None when none of them is of a known family (a generic merge).

    Raises:
        PlanError: the inputs are of different families, or only some are of a known one.
    """
    found: dict[str, Family | None] = {}
    why: dict[str, str] = {}  # what made an input of no known family so (its model_type, say)
    for model in inputs:
        try:
            found[model.label] = detect_family(model.config, model.weights.tensors, where=model.weights.label)
        except UnsupportedArchitectureError as exc:
            if exc.wrapper is not None:  # a family's model under a wrapper's prefix: merged as no family's,
                raise  # its output held the family's config over names that no loader reads
            found[model.label] = None
            why[model.label] = str(exc)
    names = {family.name if family else None for family in found.values()}
    if len(names) > 1:
        raise PlanError(
            "the inputs are of different model families: "
            + ", ".join(f"{label}={family.name if family else 'unknown'}" for label, family in found.items())
            + ". Merge fine-tunes of one base model."
            + "".join(f" {label}: {reason}" for label, reason in why.items())
        )
    family = next(iter(found.values()))
    if family is None:
        log.info("the inputs are of no known model family: merging the recipe's target_modules, or everything")
    return family


def _architectures_differ(inputs: Sequence[InputModel], family: Family) -> str:
    """How the inputs' architectures differ (a resnet18 fine-tune beside resnet50 ones), or '': a list of
    missing or reshaped tensors does not say that the cause is a model of another size."""
    layouts = {m.label: model_layout(family, m.config, m.weights.tensors) for m in inputs}
    keys = dict.fromkeys(key for layout in layouts.values() for key in layout)  # in the layouts' order
    differ = [key for key in keys if len({layout[key] for layout in layouts.values() if key in layout}) > 1]
    if not differ:
        return ""
    said = [f"{label}: " + (", ".join(f"{key}={layout[key]}" for key in differ if key in layout) or "not said")
            for label, layout in layouts.items()]
    return f"The inputs are different {family.name} models ({'; '.join(said)})."


def _head_tensors(
    inputs: Sequence[InputModel], index: int, names: Sequence[str], family: Family | None,
    decision: HeadDecision | None, recipe: Recipe, merged: str | None,
) -> list[TensorPlan]:
    """The tensors a task keeps, as the head decision says: copied, reordered or re-initialised; floats in
    the dtype of the ``merged`` tensors where that holds them (see ``_out_dtype``)."""
    model = inputs[index]
    out = []
    if decision is not None and decision.reinitialized and family is not None:
        fan_in = next((m.weights.tensors[family.head_weight].info.shape[1] for m in inputs
                       if family.head_weight in m.weights.tensors), None)
        if fan_in is None:
            raise PlanError(f"no input has a '{family.head_weight}' tensor to size a new head for {decision.task}")
        dtype = next(m.weights.tensors[family.head_weight].info.dtype for m in inputs
                     if family.head_weight in m.weights.tensors)
        classes = len(decision.labels)
        seed = head_seed(decision.task)
        names = [n for n in names if not family.is_head(n)]
        out += [
            TensorPlan(family.head_weight, "init", (classes, fan_in), _out_dtype(dtype, recipe, merged), (), init_seed=seed,
                       init_fan_in=fan_in),
            TensorPlan(family.head_bias, "init", (classes,), _out_dtype(dtype, recipe, merged), (), init_seed=seed + 1,
                       init_fan_in=fan_in),
        ]
    for name in _layout_order(model.weights, names):
        info = model.weights.tensors[name].info
        if DTYPES[info.dtype].torch_name is None:
            raise UnsupportedDtypeError(name, info.dtype, model.label)
        rows = decision.rows if decision is not None and family is not None and family.is_head(name) else None
        out.append(TensorPlan(name, "copy", info.shape, _out_dtype(info.dtype, recipe, merged), (index,), rows=rows))
    return out


def _plan_from_inputs(recipe: Recipe, method: MergeMethod, inputs: list[InputModel],
                      match_labels: Literal["name", "position"] = "name") -> MergePlan:
    base_index = 0 if recipe.base_model is not None else None
    model_indices = [i for i, m in enumerate(inputs) if m.role == "model"]
    default_task = recipe.resolved_default_task
    default_index = next(
        (i for i in model_indices if (entry := inputs[i].entry) is not None and entry.task == default_task),
        model_indices[0],
    )
    files_index = base_index if base_index is not None else model_indices[0]
    buffer_source = base_index if base_index is not None else model_indices[0]
    uses_base = method.accepts_base and base_index is not None
    merge_readers = tuple(([base_index] if uses_base and base_index is not None else []) + model_indices)

    family = _detect_family(inputs)
    prefixes = merged_prefixes(recipe, family)
    all_names = {name for m in inputs for name in m.weights.tensors}
    target = sorted(n for n in all_names if _in_targets(n, prefixes))
    if prefixes and not target:
        roots = sorted({n.split(".")[0] for n in all_names})
        raise PlanError(
            f"target_modules {list(prefixes)} match no tensor. Tensor names start with: {', '.join(roots[:20])}."
        )

    missing: dict[str, list[str]] = {}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    kinds: dict[str, dict[str, str]] = {}
    tensors: list[TensorPlan] = []
    for name in target:
        infos = {inputs[i].label: inputs[i].weights.tensors.get(name) for i in merge_readers}
        if buffer_source not in merge_readers:
            infos[inputs[buffer_source].label] = inputs[buffer_source].weights.tensors.get(name)
        absent = [label for label, loc in infos.items() if loc is None]
        if absent:
            missing[name] = absent
            continue
        present = {label: loc.info for label, loc in infos.items() if loc is not None}
        if len({i.shape for i in present.values()}) > 1:
            shapes[name] = {label: i.shape for label, i in present.items()}
        if len({is_float(i.dtype) for i in present.values()}) > 1:
            kinds[name] = {label: i.dtype for label, i in present.items()}
        for label, info in present.items():
            if DTYPES[info.dtype].torch_name is None or DTYPES[info.dtype].kind == "complex":
                raise UnsupportedDtypeError(name, info.dtype, label)
    if missing or shapes:
        agreeing = {name.split(".")[0] for name in target} - {name.split(".")[0] for name in shapes}
        error: PlanError = (MissingTensorError(missing) if missing
                            else ShapeMismatchError(shapes, suggestion=sorted(agreeing)))
        if family is not None and (differ := _architectures_differ(inputs, family)):
            error.append_to_message(differ)
        raise error
    if kinds:
        raise DtypeMismatchError(kinds)

    layout = inputs[default_index].weights
    in_layout = [n for n in target if n in layout.tensors]
    ordered = _layout_order(layout, in_layout) + sorted(set(target) - set(in_layout))
    for name in ordered:
        info = inputs[buffer_source].weights.tensors[name].info
        if is_integer(info.dtype):
            tensors.append(TensorPlan(name, "copy", info.shape, info.dtype, (buffer_source,)))
            continue
        averaged = method.accepts_base and is_running_statistic(name)  # see hubmerge.vision.families: statistics
        readers = tuple(model_indices) if averaged else merge_readers
        first = inputs[readers[0]].weights.tensors[name].info
        out_dtype = _out_dtype(common_float(inputs[i].weights.tensors[name].info.dtype for i in readers), recipe)
        tensors.append(TensorPlan(name, "average" if averaged else "merge", first.shape, out_dtype, readers))

    merged_floats = {t.out_dtype for t in tensors if t.action != "copy"}
    merged = merged_floats.pop() if len(merged_floats) == 1 else None
    heads: list[HeadPlan] = []
    skipped: list[tuple[str, str]] = []
    if prefixes:
        for i, model in enumerate(inputs):
            own = [n for n in model.weights.tensors if not _in_targets(n, prefixes)]
            task = model.entry.task if model.entry is not None else None
            decision = None
            if family is not None and task is not None:
                weight = model.weights.tensors.get(family.head_weight)
                decision = decide_head(
                    task, head_rows=weight.info.shape[0] if weight is not None else 0, config=model.config,
                    dataset=model.entry.dataset if model.entry is not None else None, match=match_labels,
                )
            copies = _head_tensors(inputs, i, own, family, decision, recipe, merged)
            if i == default_index:
                tensors.extend(copies)
            if task is not None and copies:
                heads.append(HeadPlan(task, i, tuple(copies), decision))
            elif i != default_index:
                skipped.extend((model.label, c.name) for c in copies)
    return MergePlan(
        recipe=recipe,
        method=method,
        inputs=tuple(inputs),
        tensors=tuple(tensors),
        heads=tuple(heads),
        skipped=tuple(skipped),
        default_input=default_index,
        files_input=files_index,
        base_input=base_index,
        family=family,
    )


def close_plan(merge_plan: MergePlan) -> None:
    """Close every input's source (files, HTTP sessions)."""
    for model in merge_plan.inputs:
        model.weights.source.close()

