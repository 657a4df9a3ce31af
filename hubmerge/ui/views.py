"""What the app shows, as plain data: tables for a plan and a comparison, the card's body.

Pure functions of hubmerge's own objects (a ``MergePlan``, a ``CompareReport``, a card file), so
what the browser shows is tested without a browser, and the CLI's words are reused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..plan_summary import INPUT_COLUMNS, human_bytes, input_rows, summary_rows

if TYPE_CHECKING:
    import pandas as pd

    from ..engine import MergePlan
    from ..evaluation import CompareReport, EvalReport

__all__ = ["SUMMARY_COLUMNS", "card_body", "plan_headline", "plan_tables", "results_chart", "results_table"]

RESULT_ROWS_IN_CHART = ("merged", "base + task heads", "individual (own fine-tune)")
SUMMARY_COLUMNS = ("what", "value")


def plan_tables(merge_plan: MergePlan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The compatibility table (one row per input) and the plan's summary (what, value)."""
    import pandas as pd

    inputs = pd.DataFrame(input_rows(merge_plan), columns=list(INPUT_COLUMNS))
    summary = pd.DataFrame(summary_rows(merge_plan), columns=list(SUMMARY_COLUMNS))
    return inputs, summary


def plan_headline(merge_plan: MergePlan) -> str:
    """One line of markdown: compatible or not, and what the merge will cost before it starts."""
    reinitialized = [h.task for h in merge_plan.heads if h.decision is not None and h.decision.reinitialized]
    line = (
        f"**Compatible:** {len(merge_plan.inputs)} models, {merge_plan.counts['merged']} tensors merged. "
        f"Reads {human_bytes(merge_plan.bytes_to_read)}, writes {human_bytes(merge_plan.bytes_to_write)}, "
        f"peak memory about {human_bytes(merge_plan.peak_memory_estimate())}."
    )
    if reinitialized:
        line += f" Heads re-initialized (accuracy meaningless until trained): {', '.join(reinitialized)}."
    return line


def _pct(value: float) -> float | None:
    return None if math.isnan(value) else round(100 * value, 2)


def results_table(report: CompareReport | EvalReport) -> pd.DataFrame:
    """Accuracy (%) per task and on average: one row per model (merged first), as the CLI prints it."""
    import pandas as pd

    from ..evaluation import CompareReport, accuracy_matrix

    if not isinstance(report, CompareReport):
        rows = {"merged": [*(r.accuracy for r in report.results.values()), report.average["accuracy"]]}
        columns = [*report.results, "average"]
    else:
        columns, rows = accuracy_matrix(report)
    return pd.DataFrame([[name, *map(_pct, values)] for name, values in rows.items()], columns=["model", *columns])


def results_note(report: CompareReport | EvalReport) -> str:
    """What the merged model's accuracies rest on, when it is not plain: a random subset of a split
    (``max_samples``), NaN/infinite outputs counted as wrong, or classes matched by position; '' otherwise."""
    from ..evaluation import CompareReport

    merged = report.merged if isinstance(report, CompareReport) else report
    notes = []
    if subsets := merged.subsets():
        notes.append(f"Accuracy measured on a fixed random subset of each split (examples: {subsets}).")
    if broken := merged.non_finite():
        notes.append(f"The merged model gave NaN or infinite outputs, counted as wrong (examples: {broken}).")
    if matched := merged.by_position():
        notes.append(f"Classes matched by position for {matched}: the dataset names them otherwise than the head, "
                     "so these accuracies hold only if both list them in the same order.")
    return " ".join(notes)


def results_chart(report: CompareReport | EvalReport) -> pd.DataFrame:
    """Long-form data for the bar chart: merged vs base vs each task's own fine-tune, per task.

    Bars are grouped per task side by side (the ``bar`` column is ``task · model``, in order).
    """
    import pandas as pd

    table = results_table(report)
    shown = table[table["model"].isin(RESULT_ROWS_IN_CHART)]
    records = []
    for column in table.columns[1:]:
        for _, row in shown.iterrows():
            if row[column] is None or (isinstance(row[column], float) and math.isnan(row[column])):
                continue
            records.append({"bar": f"{column} · {row['model']}", "task": column, "model": row["model"],
                            "accuracy": row[column]})
    return pd.DataFrame(records, columns=["bar", "task", "model", "accuracy"])


def card_body(card_path: str | Path, hub_url: str) -> str:
    """The model card's markdown without its YAML front matter (the Hub renders that as metadata), its links
    from the root of a Hub on this machine made to lead there rather than to the app."""
    text = Path(card_path).read_text(encoding="utf-8")
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            text = text[end + 4:].lstrip("\n")
    return text.replace("](/", f"]({hub_url.rstrip('/')}/")
