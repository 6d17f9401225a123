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
    answer_tag: bool = False  # r1-zero: the final part held an <answer>...</answer> element


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


# What each prompt template makes a completion look like (the completion includes the template's prefill):
# the shape is the template's, and markers the model writes inside its reasoning change nothing.
TEMPLATE_SHAPES = {"r1": "r1", "r1-zero": "r1-zero"}


def detect_shape(text: str, template: str | None = None) -> str:
    """The trace's shape, read at the top level only: from the template it was generated with when
    known, else from how the text begins (`<think>`, `<|begin_of_thought|>`) or a `</think>` that
    closes a block the chat template opened. Nothing inside the reasoning decides it: another
    template's markers or an `<answer>` tag written in the reasoning or after the answer do not
    switch the shape. Without a template, R1-Zero is recognised only when the whole final part is
    one `<answer>...</answer>` element."""
    head = text.lstrip()
    if template in TEMPLATE_SHAPES:
        shape = TEMPLATE_SHAPES[template]
        if shape == "r1" and not head.startswith(THINK_OPEN):
            # the teacher's chat template opened the block itself, or no block at all was written
            return "r1-distill" if THINK_CLOSE in text else "plain"
        return shape
    if head.startswith(QWQ[0]):
        return "qwq"
    if head.startswith(THINK_OPEN):
        final = text.partition(THINK_CLOSE)[2].strip() if THINK_CLOSE in text else ""
        if template is None and _ANSWER_ONLY.fullmatch(final):
            return "r1-zero"
        return "r1"
    if THINK_CLOSE in text:
        return "r1-distill"
    return "plain"


_ANSWER_ONLY = re.compile(r"<answer>(?:(?!</?answer>).)*</answer>", re.S)


def parse(text: str, shape: str = "auto", template: str | None = None) -> Parsed:
    """The trace split by its shape (`detect_shape` when `shape` is auto). Consumers call
    `distill.verify.response.read_response`, which adds the answer or the program to this split."""
    if shape == "auto":
        shape = detect_shape(text, template)
    if shape == "qwq":
        b0, b1, s0, s1 = QWQ
        blocks = text.count(b0)
        closed = b1 in text
        reasoning = text.split(b0, 1)[1].split(b1, 1)[0].strip() if b0 in text else None
        final = None
        if closed:
            after = text.split(b1, 1)[1]
            if s0 in after:
                sol = after.split(s0, 1)[1]
                final = sol.split(s1, 1)[0].strip() if s1 in sol else None
            else:
                final = after.strip()
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
    answer_tag = False
    if shape == "r1-zero" and final is not None:
        m = _ANSWER_ONLY.search(final)
        answer_tag = m is not None
        # R1-Zero's answer is what its <answer> tag holds; nothing outside the tag is the answer.
        final = m.group(0)[len("<answer>"):-len("</answer>")].strip() if m else final
    return Parsed(shape, reasoning, final, closed, blocks, answer_tag)


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
