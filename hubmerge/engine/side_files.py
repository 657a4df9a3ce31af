"""The files an output holds beside its tensors: configs with each task's labels, the inputs' processor
files, and the heads index."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.report import EVAL_COMPARISON_FILE, EVAL_RESULTS_FILE, EVAL_SCOPE_FILE
from ..recipe import RECIPE_FILE
from ..vision.families import TORCHVISION_FAMILY, torchvision_architecture
from ..vision.heads import HEADS_INDEX, TaskHead, heads_index, id2label_config
from ..weights.index import INDEX_FILE
from .outputs import HEADS_DIR
from .plans import MergePlan

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".npz")
# An input's own card, indexes and reports are not the merge's: its eval_results.json would put numbers never
# measured on the merge into the card's metadata. Nor are the reports transformers' Trainer leaves in a
# fine-tune it pushed (its accuracy, its training log): with no base, the first fine-tune's files are copied.
_TRAINER_REPORTS = {"all_results.json", "train_results.json", "test_results.json", "predict_results.json",
                    "trainer_state.json"}
_NOT_COPIED = {"README.md", ".gitattributes", INDEX_FILE, "pytorch_model.bin.index.json", RECIPE_FILE, HEADS_INDEX,
               EVAL_RESULTS_FILE, EVAL_SCOPE_FILE, EVAL_COMPARISON_FILE, *_TRAINER_REPORTS}
_MAX_COPIED_FILE = 50 * 2**20


def copy_model_files(merge_plan: MergePlan, directory: Path) -> list[str]:
    """Processor and config files from the base (or first) model; config.json from the default task."""
    written: list[str] = []
    source = merge_plan.inputs[merge_plan.files_input].weights.source
    not_copied = {n.lower() for n in _NOT_COPIED}  # as a case-insensitive disk would name them too
    for name in source.list_files():
        if name.lower() in not_copied or name.endswith(_WEIGHT_SUFFIXES) or "/" in name or name.startswith("."):
            continue
        if not source.owns(name):
            log.warning("not copying %s: a link to a file outside the model's folder", source.where(name))
            continue
        if source.file_size(name) > _MAX_COPIED_FILE:
            log.info("not copying %s (larger than %d bytes)", source.where(name), _MAX_COPIED_FILE)
            continue
        (directory / name).write_bytes(source.read_file(name))
        written.append(name)
    config = config_for(merge_plan, merge_plan.default_input)
    if config is not None:
        (directory / "config.json").write_text(config)
        if "config.json" not in written:
            written.append("config.json")
    return written


def config_for(merge_plan: MergePlan, index: int) -> str | None:
    """The config an output part gets: the input's, with its task's labels and the output dtype."""
    model = merge_plan.inputs[index]
    config = dict(model.config) if model.config is not None else None
    family = merge_plan.family
    if config is None and family is not None and family.name == TORCHVISION_FAMILY:
        head = model.weights.tensors.get(family.head_weight)
        config = {
            "hubmerge_family": TORCHVISION_FAMILY,
            "architecture": torchvision_architecture(model.weights.tensors),
            "num_classes": head.info.shape[0] if head is not None else None,
        }
    if config is None:
        return None
    decision = next((h.decision for h in merge_plan.heads if h.model == index and h.decision is not None), None)
    if decision is not None:
        config = id2label_config(config, decision)
    # what transformers loads the weights as: the merged tensors' dtype, not the default input's
    written = merge_plan.merged_dtypes
    dtype = merge_plan.recipe.dtype or (written[0] if len(written) == 1 else None)
    if dtype is not None:
        if "dtype" in config or merge_plan.recipe.dtype is not None:
            config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def heads_index_json(merge_plan: MergePlan, directory: Path, files: Sequence[str]) -> str:
    """``hubmerge_heads.json``: the tasks, their heads and decisions, the family and the processor."""
    from ..vision.processors import PROCESSOR_FILE, processor_info

    preprocessor = directory / PROCESSOR_FILE
    tasks = [
        TaskHead(
            task=head.task,
            model=str(merge_plan.inputs[head.model].ref.pinned(merge_plan.inputs[head.model].revision)),
            tensors=tuple(t.name for t in head.tensors),
            files=tuple(f for f in files if f.startswith(f"{HEADS_DIR}/{head.task}/")),
            decision=head.decision,
        )
        for head in merge_plan.heads
    ]
    index = heads_index(
        tasks,
        family=merge_plan.family,
        target_modules=merge_plan.target_modules,
        default_task=merge_plan.recipe.resolved_default_task,
        processor=processor_info(merge_plan.family,
                                 json.loads(preprocessor.read_text()) if preprocessor.is_file() else None),
        averaged_statistics=[t.name for t in merge_plan.tensors if t.action == "average"],
    )
    return json.dumps(index, indent=2) + "\n"

