from __future__ import annotations

import pytest

from distill.config import PromptConfig
from distill.prompts import R1_INSTRUCTION, PromptError, build_prompt, render
from distill.verify.format import split_think


def test_r1_usage_recommendation():
    p = build_prompt("What is 1+1?", PromptConfig(template="r1"))
    assert p.messages == [{"role": "user", "content": f"What is 1+1?\n{R1_INSTRUCTION}"}]  # no system prompt
    assert "\\boxed{}" in R1_INSTRUCTION and p.prefill == "<think>\n" and not p.raw
    assert build_prompt("q", PromptConfig(template="r1", force_think=False)).prefill == ""


def test_r1_zero_template_is_raw_text():
    p = build_prompt("What is 1+1?", PromptConfig(template="r1-zero"))
    text = p.messages[0]["content"]
    assert p.raw and text.startswith("A conversation between User and Assistant.")
    assert text.endswith("User: What is 1+1?. Assistant:") and "<answer> </answer>" in text
    assert render(None, p) == text + " <think>\n"


def test_plain_template_with_instruction_and_system():
    p = build_prompt("What is 1+1?", PromptConfig(template="plain", system="Be brief.", instruction="Answer with a number."))
    assert p.messages == [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "What is 1+1?\nAnswer with a number."}]
    assert p.prefill == "" and build_prompt("q", PromptConfig(template="plain")).messages[-1]["content"] == "q"


def test_render_uses_chat_template_and_prefill(teacher):
    p = build_prompt("What is 2+2?", PromptConfig(template="r1"))
    text = render(teacher.tokenizer, p)
    assert "<|im_start|>user\nWhat is 2+2?" in text and text.endswith("<|im_start|>assistant\n<think>\n")


def test_render_without_chat_template_explains():
    class Tok:
        chat_template = None
        name_or_path = "base-model"

    with pytest.raises(PromptError, match="has no chat template; for a base model use prompt.template=r1-zero"):
        render(Tok(), build_prompt("q", PromptConfig(template="r1")))


@pytest.mark.parametrize(
    "text,reasoning,final",
    [
        ("<think>\nstep\n</think>\n\n\\boxed{2}", "step", "\\boxed{2}"),
        ("step\n</think>\nanswer 2", "step", "answer 2"),  # R1-Distill: <think> was in the prompt
        ("<think>\nstill thinking", "still thinking", None),  # truncated
        ("5 + 6 = 11", None, "5 + 6 = 11"),  # no tags at all
    ],
)
def test_split_think(text, reasoning, final):
    assert split_think(text) == (reasoning, final)


def test_prompt_too_long_is_a_clear_error(teacher):
    from distill.config import SamplingConfig
    from distill.prompts import PromptError
    from distill.teachers import Request

    old = teacher.max_model_len
    teacher.max_model_len = 16
    try:
        with pytest.raises(PromptError, match="leaves no room under max_model_len=16; raise teacher.max_model_len"):
            next(teacher.generate([Request("k", build_prompt("What is 1 + 1?", PromptConfig(template="r1")), 0)],
                                  SamplingConfig(max_tokens=4)))
    finally:
        teacher.max_model_len = old
