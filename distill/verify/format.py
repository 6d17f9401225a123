"""Output shapes: splitting a completion into reasoning and final answer, whatever the teacher wrote.

| shape        | looks like                                                                 |
|--------------|----------------------------------------------------------------------------|
| `r1`         | `<think>reasoning</think>final`                                            |
| `r1-distill` | `reasoning</think>final` (the chat template put `<think>` in the prompt)   |
| `r1-zero`    | `<think>reasoning</think> <answer>final</answer>`                          |
| `qwq`        | `<|begin_of_thought|>…<|end_of_thought|><|begin_of_solution|>…<|end_of_solution|>` |
| `plain`      | no markers: the whole text is both reasoning and final part                |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
QWQ = ("<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>")
SHAPES = ("r1", "r1-distill", "r1-zero", "qwq", "plain")
# Shapes whose reasoning sits in a delimited block that must be closed.
BLOCK_SHAPES = {"r1", "r1-distill", "r1-zero", "qwq"}


@dataclass
class Parsed:
    shape: str
    reasoning: str | None  # None: no reasoning block found (or none in this shape)
    final: str | None  # None: the block never closed, so there is no final part
    closed: bool  # the reasoning block closed (always True for `plain`)
    blocks: int  # how many reasoning blocks were opened


def split_think(completion: str) -> tuple[str | None, str | None]:
    """(reasoning, final) for the R1 shape, as stored by `distill generate`.

    Without a closing tag: reasoning is None when no block was opened (a teacher that writes no
    tags: the whole text is the final part), and final is None when the block never closed.
    """
    if THINK_CLOSE in completion:
        head, _, final = completion.partition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return reasoning.strip(), final.strip()
    if THINK_OPEN in completion:
        return completion.split(THINK_OPEN, 1)[1].strip(), None
    return None, completion.strip()


def detect_shape(text: str, template: str | None = None) -> str:
    if QWQ[0] in text or QWQ[2] in text:
        return "qwq"
    if template == "r1-zero" or (THINK_CLOSE in text and ANSWER_RE.search(text.split(THINK_CLOSE)[-1])):
        return "r1-zero"
    if THINK_OPEN in text:
        return "r1"
    if THINK_CLOSE in text:
        return "r1-distill"
    return "plain"


def parse(text: str, shape: str = "auto", template: str | None = None) -> Parsed:
    if shape == "auto":
        shape = detect_shape(text, template)
    if shape == "qwq":
        b0, b1, s0, s1 = QWQ
        blocks = text.count(b0)
        closed = b1 in text
        reasoning = text.split(b0, 1)[1].split(b1, 1)[0].strip() if b0 in text else None
        final = None
        if s0 in text:
            sol = text.split(s0, 1)[1]
            final = sol.split(s1, 1)[0].strip() if s1 in sol else None
        elif closed:
            final = text.split(b1, 1)[1].strip()
        return Parsed(shape, reasoning, final, closed, blocks)
    if shape == "plain":
        # No markers: nothing tells reasoning from answer, so both are the whole text (the answer
        # check then reads the boxed answer if any, else the text's own working such as "5 + 6 = 11").
        return Parsed(shape, text.strip(), text.strip(), True, 0)
    # r1, r1-distill, r1-zero
    blocks = text.count(THINK_OPEN) if shape != "r1-distill" else max(1, text.count(THINK_OPEN))
    closed = THINK_CLOSE in text
    reasoning, final = split_think(text)
    if shape == "r1-distill" and not closed:
        reasoning, final = text.strip(), None  # the block opened in the prompt never closed
    if shape == "r1-zero" and final is not None:
        m = ANSWER_RE.search(final)
        final = m.group(1).strip() if m else final
    return Parsed(shape, reasoning, final, closed, blocks)


def find_boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...}, with nested braces balanced."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out
