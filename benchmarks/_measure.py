"""Run one benchmark row in its own process and measure wall time, peak RSS and peak private memory.

Peak RSS comes from the kernel (``wait4`` rusage, exact); peak private memory (RssAnon: heap,
tensors, not the shared library pages or page cache) is sampled from /proc every 10 ms.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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

    @property
    def error(self) -> str:
        """The failing run's last exception line (or last output line), for a status column."""
        failed = next((r for r in self.runs if r.returncode != 0), None)
        if failed is None:
            return ""
        lines = [line.strip() for line in failed.output.splitlines() if line.strip()]
        exception = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*:", line)]
        text = (exception or lines or [f"exit {failed.returncode}"])[-1]
        return text if len(text) <= 110 else text[:107] + "..."

    def span(self, attr: str) -> tuple[float, float]:
        values = [getattr(r, attr) for r in self.runs]
        return min(values), max(values)


def precompile(package: Path) -> None:
    """Write ``package``'s bytecode once, as a regular (non-editable) ``pip install`` does.

    The editable install leaves it to the first import, which never writes it where
    PYTHONDONTWRITEBYTECODE is set (as on the CI machines): every hubmerge row would then pay for
    compiling every module it imports, which no installed tool does. The peers are pip-installed.
    """
    import compileall

    compileall.compile_dir(str(package), quiet=1)


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


@dataclass(frozen=True)
class Spec:
    """One row to measure with ``measure_interleaved``."""

    name: str
    cmd: Sequence[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    note: str = ""
    expect_failure: bool = False


def measure_interleaved(specs: Sequence[Spec], *, repeat: int = 3) -> list[Row]:
    """Measure every row ``repeat`` times, round-robin: run 1 of each row, then run 2 of each, ...

    On a shared machine a burst of someone else's load then hits one run of several rows rather than
    every run of one row, so the medians stay comparable.
    """
    runs: dict[str, list[Run]] = {spec.name: [] for spec in specs}
    for i in range(repeat):
        for spec in specs:
            print(f"  [{i + 1}/{repeat}] {spec.name}...", flush=True)
            run = run_once(spec.cmd, env=spec.env, cwd=spec.cwd)
            if run.returncode != 0 and not spec.expect_failure:
                print(f"[{spec.name}] exited {run.returncode}:\n{run.output[-2000:]}")
            runs[spec.name].append(run)
    return [Row(spec.name, runs[spec.name], spec.note) for spec in specs]


def measure(name: str, cmd: Sequence[str], *, repeat: int = 3, env: dict[str, str] | None = None,
            cwd: str | None = None, note: str = "", expect_failure: bool = False) -> Row:
    """Run ``cmd`` ``repeat`` times; failures print their output unless ``expect_failure``."""
    return measure_interleaved([Spec(name, cmd, env, cwd, note, expect_failure)], repeat=repeat)[0]


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], *, floor: str, status: bool = False) -> str:
    """A markdown table: median (min-max) wall, ratio to the floor row, peak RSS and private memory.

    With ``status``, a status column says ``ok`` or ``failed: <the exception>``, and failed rows keep
    their numbers (the time and memory it took to fail); without it they read ``failed``.
    """
    reference = next(r for r in rows if r.name == floor).median("wall")
    header = "| row | wall s, median (min-max) | x floor | peak RSS GB, median (min-max) | peak private GB, median (min-max) |"
    lines = [header + (" status |" if status else "") + " note |", "|---|---|---|---|---|" + ("---|" if status else "") + "---|"]
    for row in rows:
        if not row.ok and not status:
            lines.append(f"| {row.name} | failed | - | - | - | {_cell(row.note)} |")
            continue
        cells = [row.name]
        lo, hi = row.span("wall")
        cells.append(f"{row.median('wall'):.2f} ({lo:.2f}-{hi:.2f})")
        cells.append(f"{row.median('wall') / reference:.2f}")
        for attr in ("peak_rss", "peak_anon"):
            lo, hi = row.span(attr)
            cells.append(f"{gb(row.median(attr))} ({gb(lo)}-{gb(hi)})")
        if status:
            cells.append("ok" if row.ok else f"failed: {row.error}")
        cells.append(row.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)
