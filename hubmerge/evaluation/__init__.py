"""Per-task evaluation of merged models (and of their inputs) with ``evaluate`` on ``datasets``.

A merged output keeps one head per task; each task is evaluated with its own head on its own
dataset, batched through a ``torch.utils.data.DataLoader`` whose workers decode and preprocess the
images, under ``torch.inference_mode`` (and bf16 autocast on CUDA). Accuracy and loss come from the
``evaluate`` metric modules hubmerge ships (:mod:`hubmerge.metrics`), loaded by path, so evaluation
works offline.

Reports (JSON):

- :meth:`EvalReport.to_dict` is FusionBench's report shape, also written as ``eval_results.json``
  next to a merged model::

      {"<task>": {"accuracy": 0.97, "loss": 0.09}, ..., "average": {"accuracy": 0.95, "loss": 0.14}}

  ``average`` is the unweighted mean over tasks (a task may not be named ``average``). Next to it,
  ``eval_scope.json`` (:meth:`EvalReport.scope`) says what each task was measured on::

      {"<task>": {"dataset": "tanganke/eurosat:test", "samples": 500, "split_size": 2700,
                  "label_column": null, "image_column": null}, ...}

  with the columns the dataset named (null: none; a later evaluation of the output reads that dataset
  with them).

- :meth:`CompareReport.to_dict` (``--compare-inputs``; ``eval_comparison.json`` in an output) puts
  the merged model next to its inputs, every entry in the same FusionBench shape::

      {
        "merged":     {<task>: {accuracy, loss}, ..., "average": {...}},
        "base":       {...},                 # the base backbone with each task's head (absent without a base)
        "finetuned":  {"<input>": {...}},    # each fine-tune's backbone with each task's head
        "individual": {...}                  # each task with its own fine-tune: the usual reference
      }

  ``<input>`` is the input's task (or its model id when it has none); ``individual`` is the
  diagonal of ``finetuned``.

Models are evaluated several at a time when they share a processor: in ``compare_inputs`` each
batch is decoded once and fed to the merged model, the base and every fine-tune (as many as fit in
a parameter budget), which makes the comparison cost little more than one evaluation.

Datasets: a local ``save_to_disk`` directory, a directory of data files, or a Hub dataset id
(``HF_ENDPOINT`` and the offline variables are honoured). The image column is the first ``Image()``
feature, the label column the first ``ClassLabel``; class names are matched onto each head's
``id2label`` by name, so a dataset that orders its classes differently is remapped, not misread.
``max_samples`` evaluates a fixed random subset (seed 0), the same for every model.

Layout: :mod:`.api` (the entry points), :mod:`.data` (datasets, columns, labels), :mod:`.loop`
(DataLoader passes), :mod:`.report` (results, JSON, tables).

Example:
    >>> from hubmerge.evaluation import evaluate_model
    >>> report = evaluate_model("out/merged", {"eurosat": "tanganke/eurosat:test"})
    >>> report.to_dict()["average"]["accuracy"]
"""

from __future__ import annotations

from .api import (
    check_planned_evaluation,
    check_planned_labels,
    check_recipe_datasets,
    compare_inputs,
    evaluate_classifier,
    evaluate_model,
    evaluate_recipe_tasks,
    parse_task,
)
from .report import (
    EVAL_COMPARISON_FILE,
    EVAL_RESULTS_FILE,
    EVAL_SCOPE_FILE,
    CompareReport,
    EvalReport,
    TaskResult,
    accuracy_matrix,
    dropped_by_saving,
    render_report,
    save_output_reports,
    save_report,
)

__all__ = [
    "EVAL_COMPARISON_FILE",
    "EVAL_RESULTS_FILE",
    "EVAL_SCOPE_FILE",
    "CompareReport",
    "EvalReport",
    "TaskResult",
    "accuracy_matrix",
    "check_planned_evaluation",
    "check_planned_labels",
    "check_recipe_datasets",
    "compare_inputs",
    "dropped_by_saving",
    "evaluate_classifier",
    "evaluate_model",
    "evaluate_recipe_tasks",
    "parse_task",
    "render_report",
    "save_output_reports",
    "save_report",
]
