"""One rich console on stderr for progress and messages, so stdout stays clean for pipes."""

import sys

from rich.console import Console

# soft_wrap: messages carry paths and commands that must stay copyable, not re-wrapped at 80 columns.
# force_jupyter=False: in a notebook, print plain text to the stderr stream. As a Jupyter console, rich would
# redirect stderr into itself while a status or bar is live, and a library writing to stderr then recurses.
# In a kernel, also no terminal codes: spinners and bars would print every frame as a new line.
_kernel = "ipykernel" in sys.modules
console = Console(stderr=True, highlight=False, soft_wrap=True, force_jupyter=False,
                  force_terminal=False if _kernel else None)


def progress_bar(stage: str, enabled: bool = True):
    """The bar every long stage shows: done/total samples, a rate field the stage fills in, elapsed, ETA."""
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
