"""Merging done by hand on state dicts, to measure the trained fixtures (hubmerge.fixtures).

These are the reference computations the quality tests compare against: no hubmerge engine, just
safetensors and torch. Other tests may reuse them to check the engine's output against the same
numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from hubmerge.fixtures import EncodedSplit, FixtureSet, accuracy, load_split

from ._eval_helpers import OFFLINE_ENV

Tensors = dict[str, torch.Tensor]

def offline_env(hf_home: Path) -> dict[str, str]:
    """A copy of os.environ that keeps every Hugging Face library offline, with its own HF_HOME."""
    return {**os.environ, **OFFLINE_ENV, "HF_HOME": str(hf_home)}


def load_tensors(model_dir: Path) -> Tensors:
    """Every tensor of a saved model (one file or shards)."""
    tensors: Tensors = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def backbone_of(tensors: Mapping[str, torch.Tensor], prefix: str) -> Tensors:
    """The shared part: tensors under ``prefix.`` (the recipe's ``target_modules``)."""
    return {name: value for name, value in tensors.items() if name.startswith(prefix + ".")}


def _combine(base: Mapping[str, torch.Tensor], merged: Mapping[str, torch.Tensor]) -> Tensors:
    # Integers (BatchNorm's num_batches_tracked) are counters, not weights: keep the base's.
    return {name: (merged[name] if value.is_floating_point() else value) for name, value in base.items()}


def simple_average(backbones: Sequence[Mapping[str, torch.Tensor]]) -> Tensors:
    """Element-wise mean of the floating-point tensors of ``backbones``."""
    first = backbones[0]
    mean = {
        name: torch.stack([b[name] for b in backbones]).mean(dim=0)
        for name, value in first.items()
        if value.is_floating_point()
    }
    return _combine(first, mean)


def task_arithmetic(
    base: Mapping[str, torch.Tensor], backbones: Sequence[Mapping[str, torch.Tensor]], scaling: float
) -> Tensors:
    """``base + scaling * sum_i (backbone_i - base)`` on the floating-point tensors."""
    merged = {
        name: value + scaling * sum(b[name] - value for b in backbones)
        for name, value in base.items()
        if value.is_floating_point()
    }
    return _combine(base, merged)


@dataclass
class TaskEvaluator:
    """Each task's fine-tuned model (for its head) and its encoded test split, loaded once."""

    fixtures: FixtureSet
    models: dict[str, torch.nn.Module]
    splits: dict[str, EncodedSplit]

    @classmethod
    def load(cls, fixtures: FixtureSet) -> TaskEvaluator:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        models, splits = {}, {}
        for task in fixtures.tasks:
            models[task] = AutoModelForImageClassification.from_pretrained(fixtures.models[task]).eval()
            processor = AutoImageProcessor.from_pretrained(fixtures.models[task])
            splits[task] = load_split(fixtures.datasets[task], processor=processor)
        return cls(fixtures, models, splits)

    def evaluate(self, backbone: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Accuracy on each task of ``backbone`` combined with that task's own head."""
        results = {}
        for task, model in self.models.items():
            original = {name: value.clone() for name, value in model.state_dict().items()}
            try:
                missing, unexpected = model.load_state_dict(dict(backbone), strict=False)
                assert not unexpected, unexpected
                assert all(not name.startswith(self.fixtures.backbone + ".") for name in missing), missing
                results[task] = accuracy(model, self.splits[task])
            finally:
                model.load_state_dict(original)
        return results


def mean(scores: Mapping[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def merge_report(fixtures: FixtureSet) -> dict[str, dict[str, float]]:
    """Per-task accuracies of the merges the quality test compares (keys: see the test)."""
    evaluator = TaskEvaluator.load(fixtures)
    prefix = fixtures.backbone
    base = backbone_of(load_tensors(fixtures.base), prefix)
    tuned = {task: backbone_of(load_tensors(fixtures.models[task]), prefix) for task in fixtures.tasks}
    finetuned = {task: accuracy(model, evaluator.splits[task]) for task, model in evaluator.models.items()}
    report = {
        "finetuned": finetuned,
        "simple_average": evaluator.evaluate(simple_average(list(tuned.values()))),
        "base": evaluator.evaluate(base),
    }
    for task, backbone in tuned.items():
        report[f"single:{task}"] = evaluator.evaluate(backbone)
    for scaling in (0.3, 1.0):
        report[f"task_arithmetic:{scaling}"] = evaluator.evaluate(
            task_arithmetic(base, list(tuned.values()), scaling)
        )
    return report
