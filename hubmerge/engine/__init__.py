"""Plan a merge from headers alone, then execute it tensor group by tensor group with bounded memory.

``plan`` opens every input (local directory or Hub repo pinned to a commit), reads only the shard
index and safetensors headers, and classifies every tensor: *merge* (a backbone tensor, float, same
shape everywhere), *average* (BatchNorm running statistics under a task-vector method, which could make
a variance negative), *copy* (integer buffers such as ``num_batches_tracked``, and the default task's
head), *head* (kept per task under ``heads/<task>/``) or *skip*. Anything that would fail later fails
here, before a weight byte moves.

What is merged is the recipe's ``target_modules``; without them, the inputs' model family
(``hubmerge.vision.families``, from ``config.json`` or tensor names) gives its backbone prefixes, and
every task's head is decided from its labels (``hubmerge.vision.heads``: kept, reordered or
re-initialised). Inputs of no known family, with no ``target_modules``, are merged whole (any
safetensors model merges; tensors that differ in shape are then a ``ShapeMismatchError``).

``execute`` streams the plan: worker threads prefetch the byte ranges of the next tensor groups from
every input while the device merges the current group in float32 (float64 when that is the output's
dtype); a background thread, a group behind, casts the results to the output dtype, checks them for NaN/Inf and appends them to
pre-laid-out safetensors shards in a temporary directory that replaces the output only when
everything is written. Linear methods (averages, task arithmetic) are reduced as a running sum into
reused buffers, so memory does not grow with the number of models.

The modules, in the order the data flows: ``plans`` (what a plan holds), ``planning`` (headers to a plan),
``merger`` (the method on the device, a group at a time), ``execution`` (streaming and writing),
``side_files`` (configs, processor files and the heads index beside the tensors), ``outputs`` (a finished
output read back).
"""

from __future__ import annotations

from collections.abc import Mapping
from inspect import signature
from pathlib import Path
from typing import Any, Literal

from ..recipe import Recipe
from .execution import MergeResult, ProgressCallback, execute
from .merger import resolve_device
from .outputs import HEADS_DIR, check_merge_output, read_output_recipe
from .planning import as_recipe, close_plan, open_source, plan
from .plans import HeadPlan, InputModel, MergePlan, TensorPlan

__all__ = [
    "HEADS_DIR",
    "HeadPlan",
    "InputModel",
    "MergePlan",
    "MergeResult",
    "ProgressCallback",
    "TensorPlan",
    "check_merge_output",
    "close_plan",
    "execute",
    "merge",
    "open_source",
    "plan",
    "read_output_recipe",
    "resolve_device",
]


def merge(
    recipe: Recipe | Mapping[str, Any] | str | Path,
    output: str | Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
    match_labels: Literal["name", "position"] = "name",
    **options: Any,
) -> MergeResult:
    """``plan`` then ``execute``: the whole merge in one call (see both for arguments and errors).
    ``match_labels`` is plan's (what a ``HeadMismatchError`` says to pass); the other options are execute's.

    Example:
        >>> from hubmerge import merge
        >>> merge("recipe.yaml", "out/merged")  # or a Recipe, or {"method": "ties", "models": [...], ...}
    """
    signature(execute).bind(None, output, **options)  # a mistyped option fails before the inputs are opened
    source = {} if isinstance(recipe, (Recipe, Mapping)) else {Path(recipe): "the recipe file"}
    recipe = as_recipe(recipe)
    check_merge_output(Path(output).absolute(), overwrite=overwrite, keep={**source, **recipe.local_paths})
    merge_plan = plan(recipe, token=token, endpoint=endpoint, match_labels=match_labels)
    return execute(merge_plan, output, overwrite=overwrite, **options)

