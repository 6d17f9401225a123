"""One rich console on stderr for progress and messages, so stdout stays clean for pipes."""

import os
import sys
import time

from rich.console import Console

# soft_wrap: messages carry paths and commands that must stay copyable, not re-wrapped at 80 columns.
# force_jupyter=False: in a notebook, print plain text to the stderr stream. As a Jupyter console, rich would
# redirect stderr into itself while a status or bar is live, and a library writing to stderr then recurses.
# In a kernel, also no terminal codes: spinners and bars would print every frame as a new line.
_kernel = "ipykernel" in sys.modules
console = Console(stderr=True, highlight=False, soft_wrap=True, force_jupyter=False,
                  force_terminal=False if _kernel else None)


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LogProgress:
    """The bar's counterpart for a log file (stderr not a terminal: Slurm, `> log 2>&1`, nohup): a plain
    line at a steady interval, `stage: done/total samples (share), rate, elapsed, ETA`, and one at the
    end. A bar redraws in place, which a file cannot show: the run looked silent for hours. The
    interval is DISTILL_PROGRESS_SECONDS (30 by default)."""

    def __init__(self, stage: str, interval: float | None = None):
        self.stage = stage
        self.interval = interval if interval is not None else float(os.environ.get("DISTILL_PROGRESS_SECONDS", "30"))
        self.tasks: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for t in self.tasks.values():
            if t["completed"] != t["printed"]:
                self._line(t)

    def add_task(self, name: str, total: float | None = None, **fields) -> int:
        now = time.monotonic()
        self.tasks[len(self.tasks)] = {"name": name, "total": total, "completed": 0, "fields": fields, "start": now,
                                       "last": now, "printed": None}
        return len(self.tasks) - 1

    def update(self, task: int, completed: float | None = None, advance: float | None = None, total=None, **fields):
        t = self.tasks[task]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        t["fields"].update(fields)
        if time.monotonic() - t["last"] >= self.interval:
            self._line(t)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _line(self, t: dict) -> None:
        now = time.monotonic()
        elapsed = now - t["start"]
        done, total = t["completed"], t["total"]
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{t['name']}: {done:,.0f}" + (f"/{total:,.0f} ({done / total:.1%})" if total else "")]
        parts.append(str(t["fields"].get("rate") or f"{rate:.1f}/s"))
        parts.append(f"elapsed {_hms(elapsed)}")
        if total and rate > 0 and done < total:
            parts.append(f"ETA {_hms((total - done) / rate)}")
        console.print(", ".join(parts), markup=False, highlight=False)
        t["last"], t["printed"] = now, done


def progress_bar(stage: str, enabled: bool = True):
    """The bar every long stage shows: done/total samples, a rate field the stage fills in, elapsed, ETA.
    Where stderr is no terminal, plain lines at a steady interval instead (`LogProgress`)."""
    if enabled and not console.is_terminal and not _kernel:
        return LogProgress(stage)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not enabled)
