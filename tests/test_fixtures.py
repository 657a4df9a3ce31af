"""hubmerge.fixtures: tiny trained models and their datasets, and proof that merging them is real.

The fixture builds are cached (default cache dir, or ``$HUBMERGE_CACHE/fixtures``), so only the first
run of the suite pays for training (~25 s for both families on 2 cores). ``pytest -s`` prints the
measured merge accuracies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hubmerge import fixtures
from hubmerge.errors import DatasetError, HeadMismatchError, UnsupportedArchitectureError
from hubmerge.fixtures import BASE_TASK, FAMILIES, IMAGE_SIZE, TASKS, FixtureSet, accuracy, build_fixtures
from hubmerge.vision.classnames import class_names

from ._eval_helpers import offline_hf
from ._fixture_helpers import load_tensors, mean, merge_report, offline_env

REPO_ROOT = Path(__file__).resolve().parents[1]

# Asserted merge margins, in accuracy points (mean over the four tasks), set below what was measured
# for the fixture as built here (see the report printed by the quality test). Across 5 other seeds of
# the recipe the smallest values seen were: ConvNeXt +7.8 / +4.5 / +26, ResNet +29 / +20 / +55.
MARGINS = {
    #           (avg - base, avg - best single fine-tune, TA 0.3 - TA 1.0)
    "convnext": (0.04, 0.04, 0.20),
    "resnet": (0.15, 0.10, 0.30),
}


@pytest.fixture(scope="module")
def _offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with offline_hf(tmp_path_factory.mktemp("hf_home")):
        yield


@pytest.fixture(scope="module")
def convnext_fixtures(_offline: None) -> FixtureSet:
    return build_fixtures(family="convnext")


@pytest.fixture(scope="module")
def resnet_fixtures(_offline: None) -> FixtureSet:
    return build_fixtures(family="resnet")


@pytest.fixture(params=FAMILIES)
def fx(request: pytest.FixtureRequest) -> FixtureSet:
    return request.getfixturevalue(f"{request.param}_fixtures")


def _all_models(fx: FixtureSet) -> dict[str, Path]:
    return {BASE_TASK: fx.base, **fx.models}


def _all_datasets(fx: FixtureSet) -> dict[str, Path]:
    return {BASE_TASK: fx.base_dataset, **fx.datasets}


# ---------------------------------------------------------------- what a build contains


def test_layout(fx: FixtureSet) -> None:
    assert fx.tasks == TASKS and list(fx.models) == list(TASKS) and list(fx.datasets) == list(TASKS)
    assert fx.backbone == ("convnext" if fx.family == "convnext" else "resnet")
    assert fx.root.name.startswith(fx.family + "-")
    for task, model_dir in _all_models(fx).items():
        for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            assert (model_dir / name).is_file(), f"{task}: {name} missing"
        readme = (model_dir / "README.md").read_text()
        assert readme.startswith("---\n") and "library_name: transformers" in readme and task in readme
    for task, dataset_dir in _all_datasets(fx).items():
        assert (dataset_dir / "dataset_dict.json").is_file(), task
    assert set(fx.accuracy) == {BASE_TASK, *TASKS}
    assert not list(fx.root.parent.glob(".tmp-*")), "no temporary build directory is left behind"


def test_models_and_processors_load_offline(fx: FixtureSet) -> None:
    import datasets
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    expected_class = {"convnext": "ConvNextForImageClassification", "resnet": "ResNetForImageClassification"}
    for task, model_dir in _all_models(fx).items():
        model = AutoModelForImageClassification.from_pretrained(model_dir)
        processor = AutoImageProcessor.from_pretrained(model_dir)
        assert type(model).__name__ == expected_class[fx.family]
        names = datasets.load_from_disk(str(_all_datasets(fx)[task]))["test"].features["label"].names
        assert names == class_names(task)
        assert model.config.id2label == dict(enumerate(names))
        assert model.config.label2id == {name: i for i, name in enumerate(names)}
        assert model.config.num_labels == len(names)

        image = datasets.load_from_disk(str(_all_datasets(fx)[task]))["test"][0]["image"]
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.dtype == torch.float32
        # Normalised with ImageNet mean/std: a black pixel maps to -mean/std, per channel.
        black = -torch.tensor(processor.image_mean) / torch.tensor(processor.image_std)
        assert torch.allclose(pixels[0, :, 0, 0], black, atol=1e-5)
        with torch.inference_mode():
            assert model(pixel_values=pixels).logits.shape == (1, len(names))


def test_datasets(fx: FixtureSet) -> None:
    import datasets

    sizes = {}
    for task, dataset_dir in _all_datasets(fx).items():
        data = datasets.load_from_disk(str(dataset_dir))
        assert isinstance(data, datasets.DatasetDict) and set(data) == {"train", "test"}
        for split in data.values():
            assert isinstance(split.features["image"], datasets.Image)
            assert isinstance(split.features["label"], datasets.ClassLabel)
            assert split.features["label"].names == class_names(task)
            assert set(split["label"]) == set(range(len(class_names(task)))), "every class in every split"
            image = split[0]["image"]
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
        sizes[task] = (len(data["train"]), len(data["test"]))
    # One deterministic split of the 1,797 digits (25% test) under every task.
    assert sizes[BASE_TASK] == sizes["digits_parity"] == sizes["digits_rotated"] == (1348, 449)
    assert sizes["digits_low"][1] + sizes["digits_high"][1] == 449
    assert sizes["digits_low"][0] + sizes["digits_high"][0] == 1348

    # digits_rotated holds the same test digits as the base task, turned by 90 degrees.
    upright = datasets.load_from_disk(str(fx.base_dataset))["test"]
    rotated = datasets.load_from_disk(str(fx.datasets["digits_rotated"]))["test"]
    assert upright["label"] == rotated["label"]
    a = np.asarray(upright[0]["image"], dtype=np.int16)
    b = np.asarray(rotated[0]["image"], dtype=np.int16)
    assert np.abs(np.rot90(a, 1) - b).max() <= 2 and np.abs(a - b).max() > 50


def test_same_split_for_both_families(convnext_fixtures: FixtureSet, resnet_fixtures: FixtureSet) -> None:
    import datasets

    for task in TASKS:
        a = datasets.load_from_disk(str(convnext_fixtures.datasets[task]))["test"]
        b = datasets.load_from_disk(str(resnet_fixtures.datasets[task]))["test"]
        assert a["label"] == b["label"]


def test_finetunes_beat_chance(fx: FixtureSet) -> None:
    for task, model_dir in _all_models(fx).items():
        chance = 1 / len(class_names(task))
        measured = accuracy(model_dir, _all_datasets(fx)[task])
        assert measured >= 0.9 > chance + 0.35, f"{fx.family}/{task}: {measured:.3f}"
        # The user's path (processor from the model dir, images from the saved dataset) sees exactly
        # what the build measured.
        assert measured == pytest.approx(fx.accuracy[task], abs=1e-9)


def test_backbone_shared_heads_own(fx: FixtureSet) -> None:
    import torch

    prefix = fx.backbone + "."
    base = load_tensors(fx.base)
    base_backbone = {k: v for k, v in base.items() if k.startswith(prefix)}
    assert base_backbone and all(not k.startswith(prefix) for k in set(base) - set(base_backbone))
    for task, model_dir in fx.models.items():
        tensors = load_tensors(model_dir)
        backbone = {k: v for k, v in tensors.items() if k.startswith(prefix)}
        assert {k: v.shape for k, v in backbone.items()} == {k: v.shape for k, v in base_backbone.items()}
        head = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
        weights = [v for k, v in head.items() if k.endswith("weight")]
        assert len(weights) == 1 and weights[0].shape[0] == len(class_names(task))
        # Each fine-tune moves the backbone noticeably (relative L2 change of its float tensors).
        floats = [k for k, v in base_backbone.items() if v.is_floating_point()]
        delta = torch.cat([(backbone[k] - base_backbone[k]).flatten() for k in floats])
        norm = torch.cat([base_backbone[k].flatten() for k in floats])
        assert float(delta.norm() / norm.norm()) > 0.02, task


# ---------------------------------------------------------------- merging is real


@pytest.mark.parametrize("family", FAMILIES)
def test_merging_beats_its_inputs(family: str, request: pytest.FixtureRequest) -> None:
    """(a) average of fine-tuned backbones vs (b) base backbone vs (c) any single fine-tune's backbone,
    each task with its own head; (d) task arithmetic 0.3 vs 1.0. Plain torch on state dicts."""
    fx: FixtureSet = request.getfixturevalue(f"{family}_fixtures")
    report = merge_report(fx)
    means = {name: mean(scores) for name, scores in report.items()}
    print(f"\n[{family}] mean accuracy over {', '.join(fx.tasks)}")
    for name, scores in report.items():
        print(f"  {name:32s} {means[name]:.3f}   " + "  ".join(f"{t}={a:.3f}" for t, a in scores.items()))

    average, base = means["simple_average"], means["base"]
    best_single = max(value for name, value in means.items() if name.startswith("single:"))
    ta_small, ta_large = means["task_arithmetic:0.3"], means["task_arithmetic:1.0"]
    over_base, over_single, ta_gap = MARGINS[family]
    print(
        f"  margins: avg-base {average - base:+.3f} (assert >= {over_base}), "
        f"avg-best_single {average - best_single:+.3f} (assert >= {over_single}), "
        f"TA0.3-TA1.0 {ta_small - ta_large:+.3f} (assert >= {ta_gap})"
    )
    assert means["finetuned"] > 0.95
    assert average >= base + over_base
    assert average >= best_single + over_single
    assert ta_small >= ta_large + ta_gap


# ---------------------------------------------------------------- cache, atomicity, determinism


def test_cached_call_is_instant(convnext_fixtures: FixtureSet) -> None:
    started = time.perf_counter()
    again = build_fixtures(convnext_fixtures.root.parent, family="convnext")
    assert time.perf_counter() - started < 1.0
    assert again == convnext_fixtures


def test_cache_key_depends_on_family() -> None:
    assert fixtures._cache_key("convnext") != fixtures._cache_key("resnet")
    assert fixtures._cache_key("resnet") == fixtures._cache_key("resnet")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUBMERGE_CACHE", str(tmp_path / "hm"))
    assert fixtures.default_cache_dir() == tmp_path / "hm" / "fixtures"
    monkeypatch.delenv("HUBMERGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fixtures.default_cache_dir() == tmp_path / "xdg" / "hubmerge" / "fixtures"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fixtures.default_cache_dir() == Path.home() / ".cache" / "hubmerge" / "fixtures"


def test_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError, match="convnext, resnet"):
        build_fixtures(tmp_path, family="vit")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fixtures, "_digit_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_fixtures(tmp_path, family="resnet")
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_accuracy_checks_head_size(convnext_fixtures: FixtureSet) -> None:
    with pytest.raises(HeadMismatchError, match="2 outputs but the data has 5 classes"):
        accuracy(convnext_fixtures.models["digits_parity"], convnext_fixtures.datasets["digits_low"])


def test_load_split_errors(convnext_fixtures: FixtureSet) -> None:
    with pytest.raises(DatasetError, match="no split 'validation'"):
        fixtures.load_split(convnext_fixtures.datasets["digits_low"], split="validation")


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import hubmerge.fixtures as f
    built = []
    original = f._build
    def counting(*args, **kwargs):
        built.append(True)
        return original(*args, **kwargs)
    f._build = counting
    fx = f.build_fixtures(sys.argv[1], family="resnet")
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    AutoModelForImageClassification.from_pretrained(fx.models["digits_rotated"])
    AutoImageProcessor.from_pretrained(fx.models["digits_rotated"])
    print(json.dumps({"root": str(fx.root), "built": bool(built)}))
    """
)


@pytest.mark.slow
def test_concurrent_builds_are_atomic_and_deterministic(resnet_fixtures: FixtureSet, tmp_path: Path) -> None:
    """Two processes build into one empty cache at once: one builds, the other waits and reuses it;
    a stale half-built directory is cleaned up; every weight is bit-identical to the session's
    fixture (built earlier, perhaps in another run)."""
    import datasets

    cache = tmp_path / "cache"
    stale = cache / f".tmp-resnet-{fixtures._cache_key('resnet')}-1-deadbeef"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"\0" * 10)
    env = offline_env(tmp_path / "hf_home")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(cache)], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["root"] == results[1]["root"]
    assert sorted(r["built"] for r in results) == [False, True], "exactly one process trained"
    assert not stale.exists()
    entries = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert entries == [Path(results[0]["root"]).name]

    fresh = build_fixtures(cache, family="resnet")
    assert fresh.accuracy == resnet_fixtures.accuracy
    for task, model_dir in _all_models(fresh).items():
        reference = _all_models(resnet_fixtures)[task]
        for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
            assert (model_dir / name).read_bytes() == (reference / name).read_bytes(), f"{task}/{name}"
    for task, dataset_dir in _all_datasets(fresh).items():
        a = datasets.load_from_disk(str(dataset_dir))
        b = datasets.load_from_disk(str(_all_datasets(resnet_fixtures)[task]))
        for split in ("train", "test"):
            assert a[split]["label"] == b[split]["label"]
            raw = datasets.Image(decode=False)
            assert a[split].cast_column("image", raw)["image"] == b[split].cast_column("image", raw)["image"]
