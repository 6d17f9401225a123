"""The hf teacher on the real embedded model (loaded once per session)."""

from __future__ import annotations

from distill.config import PromptConfig, SamplingConfig
from distill.prompts import build_prompt
from distill.teachers import Request

SAMPLING = SamplingConfig(n=1, temperature=0.8, top_p=0.95, max_tokens=12, seed=0)


def req(key: str, q: str, seed: int) -> Request:
    return Request(key, build_prompt(q, PromptConfig(template="plain")), seed)


def run(teacher, reqs, sampling=SAMPLING):
    return {c.key: c for batch in teacher.generate(reqs, sampling) for c in batch}


def test_sample_depends_on_its_seed_not_its_batch(teacher):
    alone = run(teacher, [req("a", "What is 3 + 4?", 11)])["a"]
    crowd = run(teacher, [req("x", "Tell me a long story about a cat named Bob.", 5), req("a", "What is 3 + 4?", 11),
                          req("y", "Hi", 7)])
    assert crowd["a"].text == alone.text and crowd["a"].completion_tokens == alone.completion_tokens
    other_seed = {run(teacher, [req("a", "What is 3 + 4?", s)])["a"].text for s in (1, 2, 3, 4)}
    assert len(other_seed | {alone.text}) > 1  # seeds matter: it is sampling, not greedy


def test_token_counts_and_finish_reasons(teacher):
    out = run(teacher, [req("long", "Write a long essay about the history of Rome.", 1)],
              SamplingConfig(temperature=0.6, max_tokens=5))["long"]
    assert out.finish_reason == "length" and out.completion_tokens == 5
    assert out.prompt_tokens == len(teacher.tokenizer(teacher.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a long essay about the history of Rome."}],
        add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"])
    stops = run(teacher, [req(f"s{i}", "What is 1 + 1? Answer with one number.", i) for i in range(6)],
                SamplingConfig(temperature=0.6, max_tokens=48))
    stopped = [c for c in stops.values() if c.finish_reason == "stop"]
    assert stopped, "the model should end some short answers on its own"
    for c in stops.values():
        if c.finish_reason == "stop":
            assert c.completion_tokens < 48 and "<|im_end|>" not in c.text  # EOS counted, not decoded
        else:
            assert c.completion_tokens == 48


def test_greedy_is_deterministic(teacher):
    g = SamplingConfig(temperature=0, max_tokens=10)
    a = run(teacher, [req("a", "What is 5 + 2?", 1)], g)["a"].text
    b = run(teacher, [req("a", "What is 5 + 2?", 99)], g)["a"].text
    assert a == b and a
