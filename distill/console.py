"""One rich console on stderr for progress and messages, so stdout stays clean for pipes."""

from rich.console import Console

# soft_wrap: messages carry paths and commands that must stay copyable, not re-wrapped at 80 columns.
console = Console(stderr=True, highlight=False, soft_wrap=True)


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
