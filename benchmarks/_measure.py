"""Run one benchmark row in its own process and measure wall time, peak RSS and peak private memory.

Peak RSS comes from the kernel (``wait4`` rusage, exact); peak private memory (RssAnon: heap,
tensors, not the shared library pages or page cache) is sampled from /proc every 10 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    wall: float
    peak_rss: int  # bytes
    peak_anon: int  # bytes
    returncode: int
    output: str


@dataclass(frozen=True)
class Row:
    name: str
    runs: list[Run]
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(r.returncode == 0 for r in self.runs)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def span(self, attr: str) -> tuple[float, float]:
        values = [getattr(r, attr) for r in self.runs]
        return min(values), max(values)


def _sample_anon(pid: int, stop: threading.Event, peak: list[int]) -> None:
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                        break
        except OSError:
            return
        stop.wait(0.01)


def run_once(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> Run:
    started = time.perf_counter()
    process = subprocess.Popen(
        list(cmd), env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    stop = threading.Event()
    peak = [0]
    sampler = threading.Thread(target=_sample_anon, args=(process.pid, stop, peak), daemon=True)
    sampler.start()
    output_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: output_chunks.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    reader.join()
    return Run(wall, usage.ru_maxrss * 1024, peak[0], process.returncode, b"".join(output_chunks).decode(errors="replace"))


def measure(name: str, cmd: Sequence[str], *, repeat: int = 3, env: dict[str, str] | None = None,
            cwd: str | None = None, note: str = "") -> Row:
    runs = [run_once(cmd, env=env, cwd=cwd) for _ in range(repeat)]
    for run in runs:
        if run.returncode != 0:
            print(f"[{name}] exited {run.returncode}:\n{run.output[-2000:]}")
    return Row(name, runs, note)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def markdown(rows: list[Row], *, floor: str) -> str:
    """A markdown table: median (min-max) wall, ratio to the floor row, peak RSS and private memory."""
    reference = next(r for r in rows if r.name == floor).median("wall")
    lines = [
        "| row | wall s, median (min-max) | x floor | peak RSS GB | peak private GB | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.ok:
            lines.append(f"| {row.name} | failed | - | - | - | {row.note} |")
            continue
        lo, hi = row.span("wall")
        lines.append(
            f"| {row.name} | {row.median('wall'):.2f} ({lo:.2f}-{hi:.2f}) | {row.median('wall') / reference:.2f} "
            f"| {gb(row.median('peak_rss'))} | {gb(row.median('peak_anon'))} | {row.note} |"
        )
    return "\n".join(lines)
