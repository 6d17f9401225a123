"""One rich console on stderr for progress and messages, so stdout stays clean for pipes."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
