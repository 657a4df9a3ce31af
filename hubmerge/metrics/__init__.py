"""The ``evaluate`` metric modules hubmerge ships, loaded by path so that evaluation works offline.

``evaluate.load("accuracy")`` would fetch a script from the Hub; these modules live in the package
(``hubmerge/metrics/<name>/<name>.py``) and ``evaluate.load`` copies them into its modules cache
(``$HF_HOME/modules``) from there, with or without a network.

Example:
    >>> from hubmerge.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[1, 0], references=[1, 1])
    {'accuracy': 0.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

__all__ = ["METRICS", "load_metric", "metric_path"]

#: The metric modules in this package.
METRICS: tuple[str, ...] = ("accuracy", "cross_entropy")

_HERE = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """The directory of metric ``name`` (what ``evaluate.load`` takes).

    Raises:
        ValueError: ``name`` is not one of :data:`METRICS`.
    """
    if name not in METRICS:
        raise ValueError(f"unknown hubmerge metric {name!r}; known: {', '.join(METRICS)}")
    return _HERE / name


def load_metric(name: str) -> evaluate.EvaluationModule:
    """``evaluate.load`` one of hubmerge's metrics, kept in memory (no cache files are written).

    Args:
        name: ``"accuracy"`` (top-1, from predicted and true class indices) or ``"cross_entropy"``
            (mean loss in nats, from logits and true class indices).

    Returns:
        A fresh ``evaluate`` metric: feed it with ``add_batch``, read it with ``compute``.

    Raises:
        ValueError: ``name`` is not one of :data:`METRICS`.
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), keep_in_memory=True)
