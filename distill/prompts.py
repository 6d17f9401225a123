"""How a problem becomes what the teacher is sent.

Three templates:
- `r1`: DeepSeek's usage recommendation for R1 models: no system prompt, the problem followed by
  "Please reason step by step, and put your final answer within \\boxed{}.", and the output forced to
  start with "<think>\\n" (R1 models otherwise sometimes skip thinking). Rendered by the model's chat
  template.
- `r1-zero`: the plain-text template of Table 1 of the R1 report, for base models; no chat template.
- `plain`: the problem alone (plus `prompt.instruction` when set) through the chat template, no tags,
  for teachers that write no think block, such as the embedded 135M model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from distill.config import PromptConfig

R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

THINK_PREFILL = "<think>\n"

# Code problems (distill/verify/code.py): the answer is the last ```python block of the final part.
CODE_INSTRUCTION = ("Please reason step by step, then give your final solution as one complete Python program "
                    "in a single ```python code block.")
STDIO_NOTE = "The program must read the input from standard input and print the answer to standard output."


class PromptError(ValueError):
    """A prompt the teacher cannot take (no chat template, too long); the message says the fix."""


@dataclass
class Prompt:
    # Chat messages as sent. For `r1-zero` this is one user message holding the whole raw text,
    # and `raw` is True: the text goes to the model without a chat template.
    messages: list[dict]
    raw: bool = False
    # Text the completion is forced to start with; it is part of the stored `completion`, so every
    # backend yields the same sample whether or not it could prefill.
    prefill: str = ""


def code_problem_text(problem: str, spec: dict) -> str:
    """A code problem as the teacher reads it: HumanEval's signature in a code block, MBPP's task
    with one of its tests (the tests call the function by a name the model must be told)."""
    if spec["kind"] == "function":
        return f"Complete the following Python function `{spec['entry_point']}`:\n\n```python\n{problem.rstrip()}\n```"
    if spec["kind"] == "asserts":
        return f"{problem.rstrip()}\nYour code should pass this test:\n\n```python\n{spec['tests'][0]}\n```"
    if spec["kind"] == "call":  # LiveCodeBench's functional problems: the starter code is the interface
        starter = spec.get("starter_code") or (f"class {spec['class_name']}:\n    def {spec['fn_name']}(self, ...):"
                                               if spec.get("class_name") else f"def {spec['fn_name']}(...):")
        return (f"{problem.rstrip()}\n\nYou will use the following starter code to write the solution to the problem "
                f"and enclose your code within delimiters.\n```python\n{starter.rstrip()}\n```")
    return f"{problem.rstrip()}\n\n{STDIO_NOTE}"


def build_prompt(problem: str, cfg: PromptConfig, meta: dict | None = None) -> Prompt:
    """The prompt for one problem; `meta` (the problem's extra fields) makes a code problem's prompt."""
    system = [{"role": "system", "content": cfg.system}] if cfg.system else []
    spec = None
    if meta:
        from distill.verify.code import code_spec

        spec = code_spec({"problem": problem, "meta": meta})
    if spec is not None:
        problem = code_problem_text(problem, spec)
        if cfg.template == "r1":
            return Prompt(system + [{"role": "user", "content": with_instruction(problem, cfg.instruction or CODE_INSTRUCTION)}],
                          prefill=THINK_PREFILL if cfg.force_think else "")
        if cfg.template == "r1-zero" and not cfg.instruction:
            cfg = cfg.model_copy(update={"instruction": CODE_INSTRUCTION})
    if cfg.template == "r1":
        content = with_instruction(problem, cfg.instruction or R1_INSTRUCTION)
        return Prompt(system + [{"role": "user", "content": content}], prefill=THINK_PREFILL if cfg.force_think else "")
    if cfg.template == "r1-zero":
        text = R1_ZERO_TEMPLATE.format(prompt=with_instruction(problem, cfg.instruction) if cfg.instruction else problem)
        return Prompt([{"role": "user", "content": text}], raw=True, prefill=" <think>\n" if cfg.force_think else "")
    content = with_instruction(problem, cfg.instruction) if cfg.instruction else problem
    return Prompt(system + [{"role": "user", "content": content}])


def with_instruction(problem: str, instruction: str) -> str:
    """The problem with the instruction after it, or, when the instruction holds `{problem}`, the
    instruction with the problem in its place (simple-evals' GPQA prompt puts its instruction first)."""
    if "{problem}" in instruction:
        return instruction.replace("{problem}", problem)
    return f"{problem}\n{instruction}"


def render(tokenizer, prompt: Prompt) -> str:
    """The exact text a local backend feeds the model (chat template applied, prefill appended once).

    The prefill is appended only when the rendered generation prompt does not already end with it:
    DeepSeek-R1-Distill's and QwQ's templates end their generation prompt with `<think>\n`
    themselves, and a second one would put the model in a block inside a block. The stored
    completion still starts with the prefill either way (it is the start of the answer), so samples
    look the same whichever template opened the block. Generate, eval, the SFT preflight and GRPO
    all render through here.
    """
    if prompt.raw:
        return prompt.messages[0]["content"] + prompt.prefill
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            f"the teacher's tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) has no chat template; "
            "for a base model use prompt.template=r1-zero, or use an instruct/chat checkpoint"
        )
    text = tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
    return text + prefill_needed(text, prompt.prefill)


def prefill_needed(rendered: str, prefill: str) -> str:
    """What of `prefill` still has to follow `rendered` (a generation prompt): all of it, or nothing
    when the template already opened the block (`...<｜Assistant｜><think>\n`)."""
    if prefill and rendered.rstrip().endswith(prefill.strip()):
        return ""
    return prefill


def text_hash(text: str) -> str:
    """16 hex digits of sha256: a rendered prompt's or a chat template's fingerprint."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def template_hash(tokenizer) -> str | None:
    t = getattr(tokenizer, "chat_template", None)
    if isinstance(t, dict):  # several named templates
        t = json.dumps(t, sort_keys=True)
    return text_hash(t) if t else None
