"""One set of responses, three consumers: the filter, eval's scoring and the GRPO rewards must agree on the
format and on correctness of every one (issue 30). The responses mix fences, tags, another template's
markers and coding cookies, and each adversarial one sits beside an honest twin.
"""

from __future__ import annotations

import json
import os

import pytest

from distill.config import EvalConfig, FilterConfig
from distill.evaluate import judge_config, score
from distill.train.rewards import AccuracyReward, CodeReward, FormatReward
from distill.verify.batch import judge
from distill.verify.code import code_spec
from distill.verify.sandbox import sandbox_available
from tests.test_judge_redteam import ADD_ASSERTS, CASES, RIGHT, WRONG, _py, _r1

OK, WHY = sandbox_available()
pytestmark = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")

MATH = [
    _r1("The sum is \\boxed{3}."),
    _r1("The sum is \\boxed{4}."),
    "<think>\n</think>\n\n\\boxed{3}",  # an empty reasoning block: not the format, for everyone
    "<think>\nI add.\n</think>\n\nThe sum is 3.",  # right but not boxed: correct, not the format
    "<think>\nfirst\n</think><think>\nsecond\n</think>\n\\boxed{3}",  # two blocks
    "<think>\nstill thinking \\boxed{3}",  # never closed: no final answer
    _r1("\\boxed{4}", reasoning="<|begin_of_solution|>\\boxed{3}<|end_of_solution|>"),  # markers in the reasoning
    _r1("x <answer>3</answer> \\boxed{4}"),  # an answer tag beside the last box
    _r1("\\boxed{3} and \\boxed{4}"),  # hedging: the last box counts
    _r1("```python\nprint(3)\n```\n\\boxed{3}"),
]
CODE = [
    _r1(_py(RIGHT)),
    _r1(_py(WRONG)),
    "<think>\n</think>\n\n" + _py(RIGHT),
    _r1("def add(a, b):\n    return a + b\n"),  # no fence
    *[c for _, w, r in (CASES[k] for k in CASES if CASES[k][0] is ADD_ASSERTS) for c in (w, r)],
]


def _samples() -> list[dict]:
    out = []
    for i, text in enumerate(MATH):
        out.append({"key": f"m{i}", "problem_id": f"m{i}", "sample_index": 0, "problem": "What is 1 + 2?", "answer": "3",
                    "completion": text, "prompt_template": "r1", "finish_reason": "stop", "source": "t", "meta": {}})
    meta = {k: v for k, v in ADD_ASSERTS.items() if k != "problem"}
    for i, text in enumerate(CODE):
        out.append({"key": f"c{i}", "problem_id": f"c{i}", "sample_index": 0, "problem": ADD_ASSERTS["problem"],
                    "answer": "", "completion": text, "prompt_template": "r1", "finish_reason": "stop",
                    "source": "t", "meta": meta})
    return out


def test_filter_eval_and_rewards_agree_on_format_and_correctness():
    samples = _samples()
    fcfg = FilterConfig.model_validate({"format": {"allowed_shapes": ["r1", "r1-distill", "r1-zero"]},
                                        "language": {"enabled": False}, "readable": {"enabled": False},
                                        "dedup": {"enabled": False}, "workers": 0})
    filt, _ = judge(samples, fcfg, progress=False)
    ecfg = EvalConfig(workers=0)
    ev, _ = judge(samples, judge_config(ecfg, fcfg.correct.code.model_dump()), progress=False)
    _, rows = score(samples, ev, 1, [1], ecfg)
    by_id = {r["id"]: r for r in rows}

    kw = {"prompt_template": ["r1"] * len(samples), "prefill": [""] * len(samples),
          "problem": [s["problem"] for s in samples], "answer": [s["answer"] for s in samples],
          "meta": [json.dumps(s["meta"]) for s in samples]}
    completions = [s["completion"] for s in samples]
    fmt = FormatReward()(None, completions, **kw)
    acc = AccuracyReward(workers=0)(None, completions, **kw)
    code = CodeReward(fcfg.correct.code.model_dump(), workers=0)(None, completions, **kw)

    table = []
    for i, s in enumerate(samples):
        is_code = code_spec(s) is not None
        reward = code[i] if is_code else acc[i]
        table.append((s["key"], filt[i]["format"]["pass"], by_id[s["problem_id"]]["r1_format"] == 1.0, fmt[i] == 1.0,
                      filt[i]["correct"]["pass"] is True, ev[i]["correct"]["pass"] is True,
                      by_id[s["problem_id"]]["pass@1"] == 1.0, reward == 1.0))
    disagree = [t for t in table if len(set(t[1:4])) > 1 or len(set(t[4:])) > 1]
    assert not disagree, disagree
    # and the table is not trivial: both verdicts take both values
    assert {t[1] for t in table} == {True, False} and {t[4] for t in table} == {True, False}
    formats = dict((t[0], t[1]) for t in table)
    assert formats["m0"] and not formats["m2"] and not formats["m3"] and not formats["c2"]


def test_every_exported_row_reads_back_to_what_was_judged(tmp_path):
    """train.jsonl, read back through the one reading: the program is byte for byte the one the judge
    ran (its digest in the verdict), and a math row's last box is the sample's."""
    from distill.config import ExportConfig
    from distill.filter import filter_samples
    from distill.verify.code import program_digest
    from distill.verify.response import read_response

    samples = _samples()
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    cfg = FilterConfig.model_validate({"language": {"enabled": False}, "readable": {"enabled": False},
                                       "dedup": {"enabled": False}, "workers": 0})
    filter_samples(inp, tmp_path / "out", cfg, ExportConfig(), progress=False)
    kept = {json.loads(x)["key"]: json.loads(x) for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()}
    rows = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == len(kept) and any(k.startswith("c") for k in kept) and any(k.startswith("m") for k in kept)
    by_key = {s["key"]: s for s in samples}
    for row in rows:
        s = by_key[row["key"]]
        spec = code_spec(s)
        back = read_response(row["messages"][-1]["content"], "r1", spec=spec)
        orig = read_response(s["completion"], "r1", spec=spec)
        if spec:
            assert back.code == orig.code and program_digest(back.code) == kept[row["key"]]["verdicts"]["correct"][
                "value"]["program_sha256"], row["key"]
        else:
            assert back.boxed == orig.boxed and back.reasoning == orig.reasoning, row["key"]
