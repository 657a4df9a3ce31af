"""A merge plan in words: the rows that the CLI draws with rich and the web app shows as tables.

One place decides what a plan says about itself, so the terminal and the browser never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .weights.dtypes import DTYPES

if TYPE_CHECKING:
    from .engine import MergePlan

__all__ = ["INPUT_COLUMNS", "human_bytes", "input_rows", "summary_rows"]

INPUT_COLUMNS = ("input", "model", "revision", "files", "tensors", "size")


def human_bytes(n: float) -> str:
    """``1234567`` -> ``'1.23 MB'`` (decimal units, as the Hub shows sizes)."""
    for unit in ("B", "kB", "MB", "GB"):
        if round(abs(n), 0 if unit == "B" else 2) < 1000:  # 999.999 GB would print as "1000.00 GB"
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def input_rows(merge_plan: MergePlan) -> list[tuple[str, ...]]:
    """One row per input model, in ``INPUT_COLUMNS`` order.

    A Hugging Face cache snapshot (what ``snapshot_download()`` returns) is named by its Hub repo and
    commit, as the card names it: its path is long and says the same less readably.
    """
    rows: list[tuple[str, ...]] = []
    for m in merge_plan.inputs:
        model, revision = str(m.ref), m.revision or "local"
        if (hub_copy := m.ref.hub_copy) is not None:
            model, revision = f"{hub_copy[0]} (local cache)", hub_copy[1]
        rows.append((m.label, model, revision[:12], str(len(m.weights.files)), str(len(m.weights.tensors)),
                     human_bytes(m.weights.total_bytes)))
    return rows


def summary_rows(merge_plan: MergePlan) -> list[tuple[str, str]]:
    """``(what, value)`` pairs: method, family, what is merged, copied and kept per task, and the costs.

    A re-initialised head's value starts with ``re-initialized`` so front ends can flag it.
    """
    counts = merge_plan.counts
    params = ", ".join(f"{k}={v}" for k, v in merge_plan.recipe.parameters.items()) or "none"
    family = merge_plan.family.name if merge_plan.family else "unknown (generic safetensors merge)"
    rows = [
        ("method", f"{merge_plan.method.name} ({params})"),
        ("family", family),
        ("merged tensors", f"{counts['merged']} under {', '.join(merge_plan.target_modules) or 'every prefix'}"),
        ("output dtype", _output_dtype(merge_plan)),
    ]
    if merge_plan.recipe.base_model is not None and not merge_plan.method.accepts_base:
        unused = f"not merged by {merge_plan.method.name}: the output takes only its processor files and integer buffers"
        rows.append(("base model", unused))
    if counts["averaged"]:
        mean = "the fine-tunes' mean (task vectors can make a variance negative)"
        rows.append(("averaged tensors", f"{counts['averaged']} BatchNorm running statistics: {mean}"))
    rows.append(("copied tensors", f"{counts['copied']} (integer buffers and the default task's head)"))
    for head in merge_plan.heads:
        decision = head.decision
        if decision is None:
            shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in head.tensors[:3])
            more = f" +{len(head.tensors) - 3}" if len(head.tensors) > 3 else ""
            rows.append((f"head: {head.task}", shapes + more))
            continue
        fate = f"re-initialized: {decision.reason}" if decision.reinitialized else "kept (fine-tuned)"
        if decision.rows is not None:
            fate += ", rows reordered to the dataset's labels"
        classes = f"; {len(decision.labels)} classes from the {decision.label_source}"
        rows.append((f"head: {head.task}", fate + ("" if decision.reinitialized else classes)))  # the reason says them
    for index in _heads_without_task(merge_plan):
        fate = "root only (the default input)" if index == merge_plan.default_input else "dropped"
        rows.append((f"head: {merge_plan.inputs[index].label}", f"{fate}: no task named; a 'task:' keeps it in heads/"))
    if merge_plan.skipped:
        label, name = merge_plan.skipped[0]
        rows.append(("skipped", f"{counts['skipped']} tensors (e.g. {label}:{name})"))
    rows += [
        ("default task", str(merge_plan.recipe.resolved_default_task or "-")),
        ("bytes to read", human_bytes(merge_plan.bytes_to_read)),
        ("output size", human_bytes(merge_plan.bytes_to_write)),
        ("peak memory (buffers)", human_bytes(merge_plan.peak_memory_estimate())),
    ]
    return rows


def _output_dtype(merge_plan: MergePlan) -> str:
    """The merged tensors' dtype and why: the recipe's, the inputs', or the one that holds inputs that differ."""
    written = ", ".join(merge_plan.merged_dtypes) or "-"
    read = sorted({DTYPES[merge_plan.inputs[i].weights.tensors[t.name].info.dtype].torch_name or "?"
                   for t in merge_plan.tensors if t.action in ("merge", "average") for i in t.readers})
    if merge_plan.recipe.dtype is not None:
        return f"{written}, as asked"
    if len(read) > 1:
        return f"{written}: the inputs mix {' and '.join(read)}"
    return f"{written}, as the inputs"


def _heads_without_task(merge_plan: MergePlan) -> list[int]:
    """Fine-tuned inputs whose head is not merged and that name no task: nothing keeps their head."""
    if not merge_plan.target_modules:
        return []  # everything is merged, heads included
    return [
        i for i, m in enumerate(merge_plan.inputs)
        if m.role == "model" and (m.entry is None or m.entry.task is None)
    ]
