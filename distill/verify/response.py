"""One reading of a response: reasoning, final part, and the answer or program that is judged.

Every consumer reads a model's output through `read_response`: the filter's checks, the export to
`train.jsonl`, `distill generate`'s stored split, eval's figures, the GRPO rewards and the on-policy
logs. So what is judged is what is trained on, and what one of them accepts the others accept.

    r = read_response(completion, template="r1", spec=code_spec(problem))
    r.shape, r.reasoning, r.final      # the split (distill/verify/format.py: shapes)
    r.boxed                            # math: the last \\boxed{} of the final part, or None
    r.program                          # code: the program the sandbox runs (distill/verify/code.py)

The shape comes from the template the sample was generated with (`prompt_template`, recorded with
every sample); without one, only the top level of the text decides it, never its reasoning. Code
fences are read as CommonMark reads them.

**The format rule** (`format_problems`, `r1_format`) is written here once and used by the filter's
`format` check, eval's `r1_format` figure and the GRPO `format` reward: one reasoning block, closed,
not empty, then a final part that holds the answer (a `\\boxed{}` for math, a fenced block for code, an
`<answer>` element for R1-Zero). An empty block (`<think></think>`) is not the format: the R1 report's
format is reasoning then answer, and a student trained on empty blocks learns to skip the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.verify.code import extract_code, fenced_blocks
from distill.verify.format import BLOCK_SHAPES, Parsed, find_boxed, parse

# The shapes of the R1 family: what eval's `r1_format` and the GRPO format reward accept.
R1_SHAPES = ("r1", "r1-distill", "r1-zero")


@dataclass(frozen=True)
class Response:
    text: str
    shape: str
    reasoning: str | None
    final: str | None
    closed: bool
    blocks: int
    answer_tag: bool  # r1-zero: the final part was an <answer> element
    boxed: str | None  # the last \boxed{} of the final part (math), or None
    program: dict | None  # code problems: extract_code's result (status, code, blocks, detail); else None

    @property
    def parsed(self) -> Parsed:
        return Parsed(self.shape, self.reasoning, self.final, self.closed, self.blocks, self.answer_tag)

    @property
    def code(self) -> str | None:
        """The program that is judged (None when extraction failed or this is no code problem)."""
        return self.program["code"] if self.program and self.program["status"] == "ok" else None


def read_response(text: str, template: str | None = None, shape: str = "auto", spec: dict | None = None) -> Response:
    """The one reading of a completion (prefill included). `template`: the prompt template the sample was
    generated with (its `prompt_template`); `shape`: force a shape (the filter's `format.shape`);
    `spec`: the code problem (`code_spec`) when the answer is a program."""
    p = parse(text, shape, template)
    boxes = find_boxed(p.final or "") if spec is None else []
    program = extract_code(p.final, spec) if spec is not None else None
    return Response(text, p.shape, p.reasoning, p.final, p.closed, p.blocks, p.answer_tag,
                    boxes[-1] if boxes else None, program)


def block_problems(r) -> list[str]:
    """What is wrong with the reasoning block (the filter's `complete` check reports the same): never
    closed, several blocks, or nothing in it. `r`: a Response or a Parsed."""
    problems = []
    if r.shape in BLOCK_SHAPES:
        if not r.closed:
            problems.append("unclosed_reasoning")
        elif r.blocks > 1:
            problems.append(f"{r.blocks}_reasoning_blocks")
    if not (r.reasoning or "").strip():
        problems.append("empty_reasoning")
    return problems


def format_problems(r: Response, code: bool, require_answer: bool = True) -> list[str]:
    """What keeps a response from the format: [] when it has one closed, non-empty reasoning block and
    a final part holding its answer. `require_answer`: math answers must be boxed (R1-Zero's must be
    in an <answer> element whatever this says; code answers must be a fenced block)."""
    problems = [] if r.shape in BLOCK_SHAPES else ["no_reasoning_block"]
    problems += block_problems(r)
    if code:
        if not fenced_blocks(r.final or ""):
            problems.append("no_code_block")
    elif r.shape == "r1-zero":
        if not r.answer_tag:
            problems.append("no_answer_tag")
    elif require_answer and not find_boxed(r.final or ""):
        problems.append("no_boxed_answer")
    return problems


def r1_format(r: Response, code: bool) -> bool:
    """The R1 format (eval's `r1_format`, the GRPO `format` reward, the filter's `format` check when its
    allowed shapes are the R1 family)."""
    return r.shape in R1_SHAPES and not format_problems(r, code)
