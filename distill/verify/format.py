"""Splitting a completion into reasoning and final answer."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_think(completion: str) -> tuple[str | None, str | None]:
    """(reasoning, final) for the R1 shape `<think>reasoning</think>final`.

    The opening tag may be missing (R1-Distill chat templates put it in the prompt). Without a
    closing tag: reasoning is None when no block was opened (a teacher that writes no tags: the
    whole text is the final part), and final is None when the block never closed (truncated).
    """
    if THINK_CLOSE in completion:
        head, _, final = completion.partition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return reasoning.strip(), final.strip()
    if THINK_OPEN in completion:
        return completion.split(THINK_OPEN, 1)[1].strip(), None
    return None, completion.strip()
