"""Top-1 accuracy: the fraction of predictions equal to their reference label.

hubmerge's own copy of the metric, loaded by path (``evaluate.load(<this directory>)``) so that
evaluation never fetches a script from the Hub and works offline. Same inputs and output as the
Hub's ``accuracy`` metric, without its scikit-learn dependency.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy = (number of predictions equal to their reference) / (number of predictions).
Optional per-example ``sample_weight`` turns it into a weighted mean; ``normalize=False`` returns
the (weighted) count of correct predictions instead of the fraction.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices, in the same index space as the predictions.
    normalize (`bool`, default True): return the fraction (True) or the count (False).
    sample_weight (`list` of `float`, optional): one weight per example.

Returns:
    accuracy (`float` or `int`): in [0, 1] when normalized, else the number of correct predictions.

Examples:
    >>> from hubmerge.metrics import load_metric
    >>> metric = load_metric("accuracy")  # evaluate.load of this folder, from any working directory
    >>> metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
            reference_urls=["https://en.wikipedia.org/wiki/Accuracy_and_precision"],
        )

    def _compute(
        self,
        predictions: np.ndarray,
        references: np.ndarray,
        normalize: bool = True,
        sample_weight: Any = None,
    ) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy needs at least one prediction")
        correct = (predictions == references).astype(np.float64)
        weights = np.ones_like(correct) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if weights.shape != correct.shape:
            raise ValueError(f"sample_weight has {weights.size} values for {correct.size} predictions")
        total = float((correct * weights).sum())
        if not normalize:
            return {"accuracy": total if sample_weight is not None else int(total)}
        return {"accuracy": total / float(weights.sum())}
