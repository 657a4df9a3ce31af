"""hubmerge.metrics: the evaluate modules hubmerge ships, loaded by path, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hubmerge.metrics import METRICS, load_metric, metric_path

from ._eval_helpers import OFFLINE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)


def test_metric_files_are_package_data() -> None:
    for name in METRICS:
        assert (metric_path(name) / f"{name}.py").is_file()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"metrics/*/*.py"' in pyproject


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="accuracy, cross_entropy"):
        metric_path("f1")


def test_accuracy() -> None:
    metric = load_metric("accuracy")
    assert metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1]) == {"accuracy": 0.75}
    count = metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1], normalize=False)
    assert count == {"accuracy": 3}
    weighted = metric.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    assert weighted == {"accuracy": pytest.approx(0.75)}


def test_accuracy_refuses_what_it_cannot_score() -> None:
    """No predictions, or a weight list of another length, are ValueErrors that say so (not a division by
    zero or a weighted mean of the wrong pairs); an unweighted count is an integer (3, not 3.0)."""
    metric = load_metric("accuracy")
    with pytest.raises(ValueError, match="at least one prediction"):
        metric.compute(predictions=[], references=[])
    for weights in ([1.0], [1.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match=f"sample_weight has {len(weights)} values for 2 predictions"):
            metric.compute(predictions=[0, 1], references=[0, 1], sample_weight=weights)
    count = metric.compute(predictions=[0, 1, 2], references=[0, 1, 1], normalize=False)["accuracy"]
    assert count == 2 and isinstance(count, int)


def test_accuracy_in_batches_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 7, size=1000)
    references = rng.integers(0, 7, size=1000)
    metric = load_metric("accuracy")
    for start in range(0, 1000, 64):
        batch = slice(start, start + 64)
        metric.add_batch(predictions=predictions[batch], references=references[batch])
    assert metric.compute()["accuracy"] == pytest.approx(float((predictions == references).mean()), abs=0)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_cross_entropy_equals_torch(scale: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 13, generator=generator) * scale
    labels = torch.randint(0, 13, (300,), generator=generator)
    metric = load_metric("cross_entropy")
    for start in range(0, 300, 64):
        batch = slice(start, start + 64)
        metric.add_batch(predictions=logits[batch].numpy(), references=labels[batch].numpy())
    expected = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert metric.compute()["cross_entropy"] == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_checks_labels() -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        load_metric("cross_entropy").compute(predictions=[[0.0, 1.0]], references=[2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got -1"):  # not the last class's loss
        load_metric("cross_entropy").compute(predictions=[[0.0, 1.0]], references=[-1])


def test_cross_entropy_is_summed_in_float64() -> None:
    """Logits near 1e4: float32's step there is 1e-3, so a float32 log-sum-exp is off by 7e-5 of the loss."""
    logits = torch.tensor([[10000.0, 10000.5], [3.0, -2.0]])
    labels = torch.tensor([0, 1])
    loss = load_metric("cross_entropy").compute(predictions=logits.numpy(), references=labels.numpy())
    expected = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert loss["cross_entropy"] == pytest.approx(expected, rel=1e-12)


def test_loads_offline_into_a_fresh_hf_home(tmp_path: Path) -> None:
    """A new process with an empty HF_HOME and every offline switch on: the modules are copied into
    evaluate's module cache under that HF_HOME and computed there, with no Hub access."""
    hf_home = tmp_path / "hf_home"
    child = textwrap.dedent(
        """
        import json, warnings
        warnings.simplefilter("error")
        from hubmerge.metrics import load_metric
        accuracy = load_metric("accuracy").compute(predictions=[1, 1], references=[1, 0])
        loss = load_metric("cross_entropy").compute(predictions=[[0.0, 0.0]], references=[0])
        print(json.dumps({**accuracy, **loss}))
        """
    )
    env = {**os.environ, **OFFLINE_ENV, "HF_HOME": str(hf_home), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_MODULES_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "accuracy": 0.5,
        "cross_entropy": pytest.approx(np.log(2)),
    }
    for name in METRICS:
        copies = list((hf_home / "modules" / "evaluate_modules" / "metrics" / name).glob(f"*/{name}.py"))
        assert len(copies) == 1, f"{name} was not copied into the module cache"
        assert copies[0].read_text() == (metric_path(name) / f"{name}.py").read_text()
    written = [p for p in (hf_home / "metrics").rglob("*") if p.is_file()]
    assert written == [], "metrics are kept in memory: no cache files"
