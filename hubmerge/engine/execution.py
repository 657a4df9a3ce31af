"""Carry out a plan: stream the inputs' tensors, merge them group by group and write the output atomically."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CancelledError
from ..recipe import RECIPE_FILE
from ..vision.heads import HEADS_INDEX
from ..weights.writer import (
    OutputTensor,
    ShardedWriter,
    atomic_output_dir,
    check_space,
    pack_in_order,
    parse_size,
)
from .merger import Merger, cast_copy, check_finite, init_tensor, resolve_device, torch_out_dtype
from .outputs import HEADS_DIR, check_merge_output
from .planning import close_plan
from .plans import DEFAULT_BUDGET_BYTES, DEFAULT_GROUP_BYTES, MergePlan, TensorPlan
from .side_files import config_for, copy_model_files, heads_index_json

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)


class MergeResult:
    """What ``execute`` wrote and how long it took."""

    output: Path
    files: tuple[str, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    device: str


def execute(
    merge_plan: MergePlan,
    output: str | Path,
    *,
    device: str | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "5GB",
    workers: int | None = None,
    group_bytes: int = DEFAULT_GROUP_BYTES,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> MergeResult:
    """Merge as planned and write the output directory atomically.

    Args:
        merge_plan: from ``plan``.
        output: the directory to create (or replace, with ``overwrite``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; defaults to the recipe's.
        overwrite: replace an existing non-empty output.
        max_shard_size: e.g. ``"5GB"``; larger outputs are split into shards plus an index.
        workers: reader threads (default: 2 for local inputs, 8 when any input is on the Hub).
        group_bytes: output bytes merged per step; ``budget_bytes``: read bytes allowed ahead.
        on_progress: called with (bytes read so far, bytes to read in total).
        cancel: set it to stop; the output is then left as it was.

    Returns:
        ``MergeResult`` with the files written and timings.

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is false, or (``OutputNotOursError``) it
            is no earlier output: a folder without ``hubmerge_recipe.yaml`` (checked before any read).
        OutputSpaceError: the output's disk has too little free space for it (checked before any read).
        NonFiniteTensorError: an input holds NaN/Inf in a merged tensor, or a tensor's values are past the
            output dtype's range (a merge result, or a copied head cast to the recipe's float16).
        WeightsError / HubError: reads failed after retries. CancelledError: ``cancel`` was set.
    """
    from ..weights.behind import Behind
    from ..weights.buffers import SHARED_POOL
    from ..weights.prefetch import Job, prefetch
    from ..weights.reader import Span, plan_spans, read_span, release_spans

    started = time.perf_counter()
    output = Path(output)
    try:
        check_merge_output(output.absolute(), overwrite=overwrite, keep=merge_plan.recipe.local_paths)
        check_space(output.absolute(), merge_plan.bytes_to_write)
        torch_device = resolve_device(device or merge_plan.recipe.device)
        max_shard = parse_size(max_shard_size)
    except BaseException:  # refused before any read: the plan's files and connections go all the same
        close_plan(merge_plan)
        raise
    remote = any(m.weights.source.revision is not None for m in merge_plan.inputs)
    workers = workers or (8 if remote else 2)
    total = merge_plan.bytes_to_read
    done = 0
    progress_lock = threading.Lock()
    merger = Merger(merge_plan, torch_device)

    def read_job(index: int, names: list[str]) -> Callable[[], tuple[int, dict[str, torch.Tensor], list[Span]]]:
        def run() -> tuple[int, dict[str, torch.Tensor], list[Span]]:
            nonlocal done
            if cancel is not None and cancel.is_set():
                raise CancelledError("the merge")
            weights = merge_plan.inputs[index].weights
            spans = plan_spans(weights, names)
            tensors: dict[str, torch.Tensor] = {}
            for span in spans:
                tensors.update(read_span(weights, span))
            with progress_lock:
                done += sum(weights.tensors[n].nbytes for n in names)
                if on_progress is not None:
                    on_progress(done, total)
            return index, tensors, spans

        return run

    def jobs_for(group: list[TensorPlan]) -> list[Job[tuple[int, dict[str, torch.Tensor], list[Span]]]]:
        """One read per input the group needs, the base first (a running sum starts from it)."""
        wanted: dict[int, list[str]] = {}
        for t in group:
            for i in t.readers:
                wanted.setdefault(i, []).append(t.name)
        return [
            Job(sum(merge_plan.inputs[i].weights.tensors[n].nbytes for n in wanted[i]), read_job(i, wanted[i]))
            for i in sorted(wanted, key=lambda i: (i != merge_plan.base_input, i))
        ]

    def finish(group: list[TensorPlan], merged: dict[str, torch.Tensor], consumed: list[tuple[int, list[Span]]],
               writer: ShardedWriter) -> None:
        """Cast, check and write one merged group, then let its input pages go (runs behind the merge)."""
        for t in group:
            value = init_tensor(t) if t.action == "init" else merged.pop(t.name)
            if t.rows is not None:
                value = value.index_select(0, merger.torch.tensor(t.rows))
            out_dtype = torch_out_dtype(t.out_dtype)
            if value.dtype != out_dtype:
                value = cast_copy(merge_plan, t, value, out_dtype) if t.action == "copy" else value.to(out_dtype)
            if t.action in ("merge", "average"):
                check_finite(merge_plan, t, value)
            writer.write(t.name, value)
            del value
        for index, spans in consumed:
            release_spans(merge_plan.inputs[index].weights, spans)

    def stream(tensors: Sequence[TensorPlan], writer: ShardedWriter) -> None:
        # A running sum holds one group; other methods hold it once per input: keep their total the same.
        per_group = group_bytes if merger.linear is not None else max(group_bytes // len(merge_plan.inputs), 2**20)
        groups = pack_in_order(tensors, per_group, lambda t: t.out_bytes)
        group_jobs = [jobs_for(group) for group in groups]
        results = prefetch((job for jobs in group_jobs for job in jobs), workers=workers, max_bytes=budget_bytes)
        use_linear = merger.linear is not None
        # Closed on any exit: an error holds this frame (and the generator) for as long as it is kept.
        with contextlib.closing(results), Behind() as behind:
            for group, jobs in zip(groups, group_jobs):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("the merge")
                count = len(jobs)
                consumed: list[tuple[int, list[Span]]] = []

                def reads(
                    count: int = count, consumed: list[tuple[int, list[Span]]] = consumed
                ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
                    for _ in range(count):
                        index, tensors, spans = next(results)
                        consumed.append((index, spans))
                        yield index, tensors

                merged = merger.linear_group(group, reads()) if use_linear else merger.gather_group(group, reads())
                behind.submit(functools.partial(finish, group, merged, consumed, writer))
                del merged

    def write_part(directory: Path, tensors: Sequence[TensorPlan]) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        writer = ShardedWriter(
            directory,
            [OutputTensor(t.name, t.out_dtype, t.shape) for t in tensors],
            max_shard_size=max_shard,
            metadata={"merged_by": "hubmerge", "method": merge_plan.method.name},
        )
        try:
            stream(tensors, writer)
            return writer.close()
        finally:
            writer.abort()

    files: list[str] = []
    try:
        with atomic_output_dir(output, overwrite=overwrite) as tmp:
            files += write_part(tmp, merge_plan.tensors)
            for head in merge_plan.heads:
                head_dir = tmp / HEADS_DIR / head.task
                files += [f"{HEADS_DIR}/{head.task}/{f}" for f in write_part(head_dir, head.tensors)]
                config = config_for(merge_plan, head.model)
                if config is not None:
                    (head_dir / "config.json").write_text(config)
                    files.append(f"{HEADS_DIR}/{head.task}/config.json")
            files += copy_model_files(merge_plan, tmp)
            if merge_plan.heads:
                (tmp / HEADS_INDEX).write_text(heads_index_json(merge_plan, tmp, files))
                files.append(HEADS_INDEX)
            pinned = merge_plan.recipe.with_revisions({m.ref: m.revision for m in merge_plan.inputs})
            (tmp / RECIPE_FILE).write_text(pinned.to_yaml())
            files.append(RECIPE_FILE)
    finally:
        close_plan(merge_plan)
        SHARED_POOL.clear()  # a long-lived process (the app) keeps no read buffers between merges
    return MergeResult(
        output=output,
        files=tuple(sorted(set(files))),
        bytes_read=done,
        bytes_written=merge_plan.bytes_to_write,
        seconds=time.perf_counter() - started,
        device=str(torch_device),
    )

