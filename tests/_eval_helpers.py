"""Helpers of the evaluation tests: offline environment, dataset variants, direct torch references."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from hubmerge.fixtures import load_split

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


@contextmanager
def offline_hf(hf_home: Path) -> Iterator[None]:
    """Every Hugging Face library offline, with its own HF_HOME, and transformers' "Loading weights"
    bars off (they would drown the reports the quality tests print); all as it was afterwards."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in OFFLINE_ENV.items():
                patch.setenv(name, value)
            patch.setenv("HF_HOME", str(hf_home))
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class AutoProcessor:
    """images -> pixel_values with a model directory's own image processor (picklable)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(str(model_dir))

    def __call__(self, images: list[Any]) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]


def direct_scores(model_dir: Path, dataset_dir: Path, *, target_offset: int = 0) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of a saved model on a saved dataset, in plain torch."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    split = load_split(dataset_dir, processor=AutoImageProcessor.from_pretrained(str(model_dir)))
    with torch.inference_mode():
        logits = model(pixel_values=split.pixel_values).logits.double()
    targets = split.labels + target_offset
    accuracy = float((logits.argmax(-1) == targets).double().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, targets))
    return accuracy, loss


def variant(
    source: Path,
    target: Path,
    *,
    names: Sequence[str] | None = None,
    relabel: Callable[[int], int] | None = None,
    drop: Sequence[str] = (),
    rename: dict[str, str] | None = None,
    plain_int_labels: bool = False,
    splits: Sequence[str] = ("test",),
) -> Path:
    """A copy of a fixture dataset with other class names, labels or columns (save_to_disk)."""
    import datasets

    data = datasets.load_from_disk(str(source))
    out = {}
    for split in splits:
        part = data[split]
        labels = [relabel(v) if relabel else v for v in part["label"]]
        features = dict(part.features)
        if plain_int_labels:
            features["label"] = datasets.Value("int64")
        elif names is not None:
            features["label"] = datasets.ClassLabel(names=list(names))
        part = datasets.Dataset.from_dict(
            {"image": part["image"], "label": labels}, features=datasets.Features(features), split=split
        )
        if drop:
            part = part.remove_columns(list(drop))
        for old, new in (rename or {}).items():
            part = part.rename_column(old, new)
        out[split] = part
    datasets.DatasetDict(out).save_to_disk(str(target))
    return target


def hf_online(monkeypatch: pytest.MonkeyPatch, online: bool) -> None:
    """Flip the offline switches that huggingface_hub and datasets read once, at import."""
    import datasets
    from huggingface_hub import constants

    for module, name in ((datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
                         (constants, "HF_HUB_OFFLINE")):
        monkeypatch.setattr(module, name, not online)


def upload_dataset(api: Any, repo_id: str, dataset_dir: Path, work: Path, *, private: bool = False) -> str:
    """A save_to_disk dataset as a Hub dataset repo of parquet files, one per split (as push_to_hub lays it out)."""
    import datasets

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    data = datasets.load_from_disk(str(dataset_dir))
    (work / "data").mkdir(parents=True)
    for split in data:
        data[split].to_parquet(str(work / "data" / f"{split}-00000-of-00001.parquet"))
    api.upload_folder(folder_path=str(work), repo_id=repo_id, repo_type="dataset")
    return repo_id
