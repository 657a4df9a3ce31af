"""Mean cross-entropy loss of classifier logits against integer labels (natural log).

hubmerge's own metric, loaded by path (``evaluate.load(<this directory>)``), so that it works
offline. ``predictions`` are the raw logits (one row of ``num_classes`` floats per example); the
log-softmax is computed here in float64 with the log-sum-exp shift, so large logits do not
overflow. This is the ``loss`` of FusionBench's image-classification reports
(``torch.nn.functional.cross_entropy`` with mean reduction).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Cross-entropy = mean over examples of -log softmax(logits)[label]. The logits are not normalised
by the caller; labels are class indices into the logits' last dimension.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): logits, shape (n_examples, n_classes).
    references (`list` of `int`): true class indices in [0, n_classes).

Returns:
    cross_entropy (`float`): the mean loss in nats.

Examples:
    >>> from hubmerge.metrics import load_metric
    >>> metric = load_metric("cross_entropy")  # evaluate.load of this folder, from any working directory
    >>> round(metric.compute(predictions=[[0.0, 0.0]], references=[1])["cross_entropy"], 4)
    0.6931
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CrossEntropy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Cross-entropy"],
        )
        # Hand the logits to _compute as one (n, classes) array instead of n Python lists (the
        # constructor only allows the numpy format for scalar features, reading it is fine).
        info.format = "numpy"
        return info

    def _compute(self, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        logits = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
            raise ValueError(
                f"expected logits of shape (n, classes) and n labels, got {logits.shape} and {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= logits.shape[1]:
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
        shift = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - shift).sum(axis=1)) + shift[:, 0]
        picked = logits[np.arange(len(labels)), labels]
        return {"cross_entropy": float((log_norm - picked).mean())}
