"""Evaluation reports: per-task results, FusionBench-shaped JSON, atomic saving and rich tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_file import write_atomically
from ..errors import WeightsError
from ..json_files import read_json_file
from ..output_stamp import OutputStamp
from ..recipe import described_dataset

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "AVERAGE",
    "EVAL_COMPARISON_FILE",
    "EVAL_RESULTS_FILE",
    "EVAL_SCOPE_FILE",
    "CompareReport",
    "EvalReport",
    "TaskResult",
    "dropped_by_saving",
    "render_report",
    "save_output_reports",
    "save_report",
]

#: The report a merged output holds (FusionBench shape).
EVAL_RESULTS_FILE = "eval_results.json"
#: What each task of that report was measured on (dataset, examples, split size), which the card says.
EVAL_SCOPE_FILE = "eval_scope.json"
#: The merged model next to its inputs (``CompareReport``), when they were evaluated too.
EVAL_COMPARISON_FILE = "eval_comparison.json"
#: The key of the mean over tasks in a report (so no task may be called that).
AVERAGE = "average"


@dataclass(frozen=True)
class TaskResult:
    """One model on one task.

    Attributes:
        accuracy: top-1 accuracy in [0, 1] (hubmerge's ``accuracy`` metric).
        loss: mean cross-entropy of the logits, in nats (``cross_entropy`` metric).
        num_samples: examples evaluated.
        dataset: the dataset and split, e.g. ``tanganke/eurosat:test``.
        seconds: wall time of the pass that evaluated it (shared by the models of one pass).
        split_size: examples in the split, of which ``max_samples`` may have taken a subset (0: unknown).
        non_finite: examples whose logits held a NaN or an infinity, counted as wrong (a broken merge,
            or a float16 overflow); the loss is then NaN.
        by_position: the dataset names its classes otherwise than the head, and they were matched by
            position (``match_labels="position"``): the accuracy holds only if both list them in one order.
        label_column, image_column: the columns named for the dataset (``--label-column``, a recipe's
            mapping), which ``dataset``'s one line cannot say; None: found by type or usual name.
    """

    accuracy: float
    loss: float
    num_samples: int = 0
    dataset: str = ""
    seconds: float = 0.0
    split_size: int = 0
    non_finite: int = 0
    by_position: bool = False
    label_column: str | None = None
    image_column: str | None = None

    def to_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "loss": self.loss}

    @property
    def described_dataset(self) -> str:
        """``dataset`` and its named columns, as the card names them: the one line alone hides a column read."""
        return described_dataset(self.dataset, self.label_column, self.image_column)


def _average(results: Mapping[str, TaskResult]) -> dict[str, float]:
    if not results:
        return {"accuracy": math.nan, "loss": math.nan}
    n = len(results)
    return {
        "accuracy": sum(r.accuracy for r in results.values()) / n,
        "loss": sum(r.loss for r in results.values()) / n,
    }


@dataclass(frozen=True)
class EvalReport:
    """Per-task results of one model (each task with its own head).

    Attributes:
        model: what was evaluated (a path, a repo id, or a description such as ``base + task heads``).
        results: task -> result, in evaluation order.
        device: where it ran.
    """

    model: str
    results: Mapping[str, TaskResult] = field(default_factory=dict)
    device: str = ""

    @property
    def average(self) -> dict[str, float]:
        """Unweighted mean accuracy and loss over the tasks (NaN without tasks)."""
        return _average(self.results)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """FusionBench's report shape: ``{task: {accuracy, loss}, ..., "average": {accuracy, loss}}``."""
        out = {task: result.to_dict() for task, result in self.results.items()}
        if self.results:
            out[AVERAGE] = self.average
        return out

    def to_json(self, *, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def subsets(self) -> str:
        """The tasks measured on a random subset of their split, e.g. ``"low 100 of 218, high 100 of 231"``
        ('' when every task used its whole split): what any display of these numbers must say."""
        return ", ".join(f"{task} {r.num_samples:,} of {r.split_size:,}" for task, r in self.results.items()
                         if 0 < r.num_samples < r.split_size)

    def non_finite(self) -> str:
        """The tasks where the model gave NaN or infinite logits, e.g. ``"low 218 of 218"`` ('' when none):
        those examples count as wrong, and a display of the numbers must say why they are so low."""
        return ", ".join(f"{task} {r.non_finite:,} of {r.num_samples:,}" for task, r in self.results.items()
                         if r.non_finite)

    def by_position(self) -> str:
        """The tasks whose classes the dataset names otherwise than the head, matched by position, e.g.
        ``"low, high"`` ('' when none): their accuracies rest on both listing the classes in one order."""
        return ", ".join(task for task, r in self.results.items() if r.by_position)

    def scope(self) -> dict[str, dict[str, Any]]:
        """What each task was measured on, ``{task: {dataset, samples, split_size[, non_finite][, labels],
        label_column, image_column}}``: FusionBench's shape has no room for it, and a card must not pass
        a subset's accuracy off as the whole split's, nor hide outputs that were NaN, nor classes matched by
        position alone; the columns named for a dataset are read again by a later evaluation. They are null
        where none was named, unlike an output's from before they were recorded, whose recipe's columns hold."""
        return {
            task: {"dataset": r.dataset, "samples": r.num_samples, "split_size": r.split_size}
            | ({"non_finite": r.non_finite} if r.non_finite else {})
            | ({"labels": "position"} if r.by_position else {})
            | {"label_column": r.label_column, "image_column": r.image_column}
            for task, r in self.results.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, model: str = "") -> EvalReport:
        """Read a FusionBench-shaped report back (e.g. an ``eval_results.json``).

        Raises:
            ValueError: an entry is not ``{accuracy, loss}`` with numbers.
        """
        results = {}
        for task, entry in data.items():
            if task == AVERAGE:
                continue
            try:
                results[task] = TaskResult(accuracy=float(entry["accuracy"]), loss=float(entry["loss"]))
            except (TypeError, KeyError, ValueError):
                raise ValueError(
                    f"report entry {task!r} must be {{'accuracy': x, 'loss': y}}, got {entry!r}"
                ) from None
        return cls(model=model, results=results)


@dataclass(frozen=True)
class CompareReport:
    """The merged model next to its inputs, each evaluated on every task with that task's head.

    Attributes:
        merged: the merged model.
        base: the base model's backbone with each task's head (None when the recipe has no base).
        finetuned: input label (its task) -> that fine-tune's backbone with each task's head.
        tasks: the tasks, in order.
    """

    merged: EvalReport
    base: EvalReport | None
    finetuned: Mapping[str, EvalReport]
    tasks: tuple[str, ...]

    @property
    def individual(self) -> EvalReport:
        """Each task evaluated by its own fine-tune (the diagonal of ``finetuned``)."""
        results = {
            task: self.finetuned[task].results[task]
            for task in self.tasks
            if task in self.finetuned and task in self.finetuned[task].results
        }
        return EvalReport("individual fine-tunes", results, self.merged.device)

    def rows(self) -> dict[str, EvalReport]:
        """Every row of the comparison table, in display order."""
        rows = {"merged": self.merged}
        if self.base is not None:
            rows["base + task heads"] = self.base
        if self.individual.results:  # none where no input named a task
            rows["individual (own fine-tune)"] = self.individual
        rows.update({f"fine-tune {label}": report for label, report in self.finetuned.items()})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``{"merged": FB, "base": FB, "finetuned": {input: FB}, "individual": FB}``.

        FB is FusionBench's shape (:meth:`EvalReport.to_dict`); ``base`` is absent without a base.
        """
        out: dict[str, Any] = {"merged": self.merged.to_dict()}
        if self.base is not None:
            out["base"] = self.base.to_dict()
        out["finetuned"] = {label: report.to_dict() for label, report in self.finetuned.items()}
        out["individual"] = self.individual.to_dict()
        return out

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + "\n"


def save_report(report: EvalReport | CompareReport, path: str | Path) -> Path:
    """Write ``report.to_json()`` to ``path`` atomically (a temporary file renamed into place).

    Returns:
        The path written.
    """
    return write_atomically(Path(path), report.to_json())


def save_output_reports(
    output: str | Path, report: EvalReport | CompareReport, *, stamp: OutputStamp | None = None
) -> Path:
    """Write a merged output's reports: ``eval_results.json`` and ``eval_scope.json`` for the merged
    model and, for a comparison, ``eval_comparison.json`` (without one, an older comparison goes: its
    merged row would disagree with the new results). Returns the path of ``eval_results.json``.

    ``stamp``: the output as it was when its evaluation began (``OutputStamp.take``); if another command
    replaced it since, an ``OutputReplacedError`` and nothing is written.

    Raises:
        ModelFilesNotFoundError: ``output`` is no folder (a mistyped one was made to hold the reports);
            RecipeError: it is no merged output (it holds no ``hubmerge_recipe.yaml``), as
            ``evaluate --save`` says.
    """
    from ..engine.outputs import check_output_folder

    output = Path(output)
    if stamp is not None:
        stamp.check("the evaluation reports")
    check_output_folder(output)
    if isinstance(report, CompareReport):
        save_report(report, output / EVAL_COMPARISON_FILE)
        merged = report.merged
    else:
        (output / EVAL_COMPARISON_FILE).unlink(missing_ok=True)
        merged = report
    write_atomically(output / EVAL_SCOPE_FILE, json.dumps(merged.scope(), indent=2) + "\n")
    return save_report(merged, output / EVAL_RESULTS_FILE)


def dropped_by_saving(output: str | Path, report: EvalReport | CompareReport) -> list[str]:
    """What :func:`save_output_reports` would drop from ``output``'s saved reports, in words: tasks the
    earlier results had and ``report`` lacks, and a comparison with the inputs that ``report`` does not
    renew. Saving replaces the reports whole, so the card never mixes two evaluations."""
    output = Path(output)
    notes = []
    merged = report.merged if isinstance(report, CompareReport) else report
    try:
        earlier = read_json_file(output / EVAL_RESULTS_FILE, ValueError)
    except (OSError, ValueError, WeightsError):
        earlier = {}
    if isinstance(earlier, dict) and (gone := [t for t in earlier if t != AVERAGE and t not in merged.results]):
        notes.append(f"the saved results no longer hold {', '.join(gone)} (this evaluation left them out; "
                     "evaluate every task together to keep them all)")
    if not isinstance(report, CompareReport) and (output / EVAL_COMPARISON_FILE).is_file():
        notes.append(f"the earlier comparison with the inputs ({EVAL_COMPARISON_FILE}) is removed, as its merged "
                     "row would disagree with these results; add --compare-inputs to save a new one")
    return notes


# ---------------------------------------------------------------------------- rendering


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def accuracy_matrix(report: CompareReport) -> tuple[list[str], dict[str, list[float]]]:
    """The comparison as numbers: columns (tasks, then the average) and one row per model (NaN: missing).

    Rows are in ``CompareReport.rows`` order (merged first); the CLI table and the web app draw it.
    """
    columns = [*report.tasks, AVERAGE]
    values = {
        name: [
            *(r.results[t].accuracy if t in r.results else math.nan for t in report.tasks),
            r.average["accuracy"],
        ]
        for name, r in report.rows().items()
    }
    return columns, values


def render_report(report: EvalReport | CompareReport, console: Console) -> None:
    """Draw a report as a rich table.

    An :class:`EvalReport` gives one row per task (dataset and its named columns, samples, accuracy %,
    loss) and the average; a :class:`CompareReport` one row per model (merged, base + task heads, individual
    fine-tunes, each fine-tune's backbone) and one accuracy column per task plus the average, the
    best of each column in bold.
    """
    from rich.table import Table

    from ..tables import print_table

    if isinstance(report, EvalReport):
        table = Table(title=f"Evaluation — {report.model}", title_justify="left")
        for column, justify in (("task", "left"), ("dataset", "left"), ("samples", "right"),
                                ("accuracy %", "right"), ("loss", "right")):
            numeric = justify == "right"
            table.add_column(column, justify=justify, overflow="fold", no_wrap=numeric)  # type: ignore[arg-type]
        for task, result in report.results.items():
            table.add_row(
                task, result.described_dataset, str(result.num_samples), _pct(result.accuracy), f"{result.loss:.4f}"
            )
        if report.results:
            average = report.average
            table.add_section()
            table.add_row(
                f"[bold]{AVERAGE}[/bold]", "", "", f"[bold]{_pct(average['accuracy'])}[/bold]",
                f"[bold]{average['loss']:.4f}[/bold]",
            )
        print_table(console, table)
        _warn({report.model: report}, console)
        return
    columns, values = accuracy_matrix(report)
    best = [
        max((v[i] for v in values.values() if not math.isnan(v[i])), default=math.nan)
        for i in range(len(columns))
    ]
    table = Table(
        title=f"Accuracy (%) — {report.merged.model} vs its inputs",
        title_justify="left",
        caption="each task with its own head; losses are in the JSON report"
        + (f"; random subsets of the splits: {subsets}" if (subsets := report.merged.subsets()) else ""),
    )
    # A narrow terminal folds the names; a number always keeps its width.
    table.add_column("model", justify="left", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right", overflow="fold", min_width=len("100.00"))
    for index, (name, accuracies) in enumerate(values.items()):
        cells = [f"[bold]{_pct(v)}[/bold]" if v == best[i] else _pct(v) for i, v in enumerate(accuracies)]
        table.add_row(f"[bold]{name}[/bold]" if name == "merged" else name, *cells, end_section=index == 0)
    print_table(console, table)
    rows = {name: r for name, r in report.rows().items() if not name.startswith("individual")}  # repeats others
    _warn(rows, console)


def _warn(reports: Mapping[str, EvalReport], console: Console) -> None:
    """Say which rows gave NaN or infinite logits (their accuracies are low for that reason, not by chance),
    and which tasks' classes were matched by position against other names (their accuracies assume one order)."""
    from rich.markup import escape

    matched = dict.fromkeys(task for r in reports.values() for task, result in r.results.items() if result.by_position)
    if matched:
        console.print(f"[yellow]Classes matched by position[/yellow] for {escape(', '.join(matched))}: the dataset "
                      "names them otherwise than the head, so these accuracies hold only if both list them in the "
                      "same order")
    broken = {name: said for name, r in reports.items() if (said := r.non_finite())}
    if broken:
        where = "; ".join(f"{name}: {said}" for name, said in broken.items())
        console.print(f"[yellow]NaN or infinite outputs, counted as wrong[/yellow] ({escape(where)} "
                      "examples): the model is broken there (a merge pushed too far, or a float16 overflow)")
