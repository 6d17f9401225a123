"""One rich console on stderr for progress and messages, so stdout stays clean for pipes."""

from rich.console import Console

# soft_wrap: messages carry paths and commands that must stay copyable, not re-wrapped at 80 columns.
console = Console(stderr=True, highlight=False, soft_wrap=True)
