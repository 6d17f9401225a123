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


def test_prompt_too_long_is_that_samples_failure_not_the_runs(teacher):
    from distill.config import SamplingConfig
    from distill.teachers import Request
    from distill.teachers.base import Failure

    old = teacher.max_model_len
    teacher.max_model_len = 16
    try:
        long_p = build_prompt("What is 1 + 1?", PromptConfig(template="r1"))
        batches = list(teacher.generate([Request("k", long_p, 0)], SamplingConfig(max_tokens=4)))
        (f,) = [c for b in batches for c in b]
        assert isinstance(f, Failure) and f.cause == "prompt_too_long"
        assert "leaves no room under max_model_len=16; raise teacher.max_model_len" in f.message
    finally:
        teacher.max_model_len = old


# -- the teacher's own template decides whether the think block is already open (issue 11) --------

def _trl_template(name: str) -> str:
    from pathlib import Path

    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


def _qwq_style() -> str:
    """QwQ-32B's template: Qwen2.5's ChatML with the generation prompt opening <think>."""
    t = _trl_template("qwen2_5")
    assert "'<|im_start|>assistant\\n'" in t
    return t.replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}")


TEMPLATES = {  # name -> (template, the template opens <think> itself)
    "deepseek_r1_distill": (lambda: _trl_template("deepseek_r1_distill"), True),
    "qwq_style": (_qwq_style, True),
    "qwen3": (lambda: _trl_template("qwen3"), False),
    "llama3": (lambda: _trl_template("llama3"), False),
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from distill.models import resolve_model

    return resolve_model("embedded").path, AutoTokenizer


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_think_block_opens_exactly_once_with_every_template(name, tok_dir):
    path, auto = tok_dir
    tok = auto.from_pretrained(path)
    template, opens = TEMPLATES[name][0](), TEMPLATES[name][1]
    tok.chat_template = template
    p = build_prompt("What is 5 + 6?", PromptConfig(template="r1", force_think=True))
    own = tok.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False)
    text = render(tok, p)
    assert text.count("<think>") == 1 and text.endswith("<think>\n")
    assert (text == own) is opens  # the template's own rendering, untouched, when it opens the block
    if name == "deepseek_r1_distill":
        assert text.endswith("<｜Assistant｜><think>\n")
        n_own = len(tok(own, add_special_tokens=False)["input_ids"])
        assert len(tok(text, add_special_tokens=False)["input_ids"]) == n_own  # not 4 tokens longer
    # the stored completion still starts with the prefill, whichever side opened the block
    assert p.prefill == "<think>\n"


def test_generate_through_hf_sends_the_templates_own_prompt_and_records_it(tmp_path):
    import json

    from transformers import AutoTokenizer

    from distill.generate import generate
    from distill.prompts import text_hash
    from tests.conftest import embedded_with_template, tiny_recipe

    d = embedded_with_template(tmp_path / "r1-distill-like", _trl_template("deepseek_r1_distill"))
    tok = AutoTokenizer.from_pretrained(d)
    r = tiny_recipe(**{"teacher.model": str(d), "prompt.template": "r1", "prompt.force_think": "true",
                       "problems.count": 2, "sampling.n": 1, "sampling.max_tokens": 4})
    generate(r, tmp_path / "s", progress=False)
    rows = [json.loads(x) for f in sorted((tmp_path / "s" / "data").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        own = tok.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
        assert row["prompt_hash"] == text_hash(own)
        assert row["prompt_tokens"] == len(tok(own, add_special_tokens=False)["input_ids"])
        assert row["completion"].startswith("<think>\n") and row["max_tokens"] == 4
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    from distill.prompts import template_hash

    assert manifest["runs"][-1]["template_hash"] == template_hash(tok)
