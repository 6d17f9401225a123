"""The R1 protocol as one switch, the suite and its Table-5-shaped report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.suite import PUBLISHED, SuiteError, apply_protocol, published_row, report

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "benchmarks"


def test_the_r1_protocol_sets_prompt_sampling_and_k_per_benchmark_and_keeps_what_was_set():
    r = load_recipe(None, ["prompt.template=plain", "sampling.temperature=1.0", "sampling.max_tokens=64"])
    got, k, rec = apply_protocol(r, "r1", "aime24", explicit={"sampling.max_tokens"})
    assert (got.prompt.template, got.prompt.system, got.prompt.force_think) == ("r1", None, True)
    assert (got.sampling.temperature, got.sampling.top_p) == (0.6, 0.95)
    assert got.sampling.max_tokens == 64 and rec["overridden"] == ["sampling.max_tokens"]  # --set wins
    assert k == 64 and rec["name"] == "r1" and "2501.12948" in rec["source"]
    assert apply_protocol(r, "r1", "math500")[1] == 4 and apply_protocol(r, "r1", "gpqa_diamond")[1] == 8
    assert apply_protocol(r, "r1", "livecodebench")[1] == 16
    gpqa = apply_protocol(r, "r1", "gpqa_diamond")[0].prompt
    assert gpqa.instruction.startswith("Answer the following multiple choice question.") and "{problem}" in gpqa.instruction
    assert apply_protocol(r, "r1", "math500")[0].prompt.instruction is None  # the template's boxed instruction
    mine = load_recipe(None, ["prompt.instruction=Pick one."])
    _, _, rec = apply_protocol(mine, "r1", "gpqa_diamond", explicit={"prompt.instruction"})
    assert rec["overridden"] == ["prompt.instruction"]
    _, k, rec = apply_protocol(r, "r1", "aime24", k=2)
    assert k == 2 and rec["overridden"] == ["k=2 (the protocol's 64)"]
    with pytest.raises(SuiteError, match="known protocols are r1"):
        apply_protocol(r, "r2", "aime24")


def test_the_published_row_is_only_for_the_six_students():
    assert published_row("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")[1]["aime24 pass@1"] == 55.5
    assert published_row("/models/DeepSeek-R1-Distill-Llama-70B/")[0] == "DeepSeek-R1-Distill-Llama-70B"
    assert published_row("runs/quick/student") is None and published_row("Qwen/Qwen2.5-Math-7B") is None
    assert len(PUBLISHED) == 6 and all(len(r) == 6 for r in PUBLISHED.values())


def _fake_eval(k, figures, problems=30, options=None):
    return {"settings": {"k": k, "problems": problems, "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768},
                         "protocol": {"name": "r1", "overridden": []}, "benchmark_options": options or {}},
            "figures": figures, "_path": "x"}


def test_the_report_has_the_table_5_shape_with_intervals_and_the_published_row(tmp_path):
    f = {"value": 0.5, "low": 0.4, "high": 0.6}
    res = {"aime24": _fake_eval(64, {"pass@1": f, "cons@64": f}), "math500": _fake_eval(4, {"pass@1": f}),
           "gpqa_diamond": _fake_eval(8, {"pass@1": f}), "livecodebench": _fake_eval(16, {"pass@1": f}, options={"start": "2024-08-01", "end": "2025-01-31"})}
    doc = report("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", res, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| AIME 2024 pass@1 | AIME 2024 cons@64 | MATH-500 pass@1 | GPQA Diamond pass@1 | LiveCodeBench pass@1 |" in md
    assert "50.0 [40.0, 60.0]" in md and "| DeepSeek-R1-Distill-Qwen-1.5B (published) | 28.9 | 52.7 | 83.9 | 33.8 | 16.9 | 954 |" in md
    assert doc["published"]["source"].startswith("DeepSeek-R1 report") and (tmp_path / "report.png").stat().st_size > 0
    # the second panel, and every published row with its protocol and where it differs from this run
    assert "| OpenReasoning-Nemotron-7B (published) | 84.7 | - | - | 61.1 | 63.3 | - |" in md
    assert doc["protocol"]["k"] == {"aime24": 64, "math500": 4, "gpqadiamond": 8, "livecodebench": 16}
    r1, nemo = doc["protocol_differences"]
    assert r1["protocol"]["max_tokens"] == 32768 and "math500 k: not stated by the source (this run: 4)" in r1["differs_from_this_run"]
    assert "max_tokens 65536 (this run: 32768)" in nemo["differs_from_this_run"]
    assert "temperature: not stated by the source (this run: 0.6)" in nemo["differs_from_this_run"]
    assert any(d.startswith("livecodebench: v6") for d in nemo["differs_from_this_run"])
    assert not any(d.startswith("livecodebench:") for d in r1["differs_from_this_run"])  # the same window
    assert "## How each row was measured" in md and "differs from this run: " in md
    doc = report("runs/student", {"aime24": _fake_eval(2, {"pass@1": f, "cons@2": f})}, tmp_path / "b")
    md = (tmp_path / "b" / "report.md").read_text()
    assert doc["published"] is None and "No published row" in md and "measured as cons@2" in md
    assert "not measured" in md  # the benchmarks not run


def _gpqa(d: Path) -> None:
    rows = [{"Record ID": f"g{i}", "Question": f"What is {i} + 1?", "Correct Answer": str(i + 1),
             "Incorrect Answer 1": str(i + 2), "Incorrect Answer 2": str(i + 3), "Incorrect Answer 3": str(i)}
            for i in range(3)]
    (d / "gpqa_diamond.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _lcb(d: Path) -> None:
    rows = [{"question_title": "Add", "question_content": "Read two integers a and b and print a + b.",
             "platform": "atcoder", "question_id": f"abc{i}_a", "contest_id": f"abc{i}",
             "contest_date": "2024-10-01T00:00:00", "starter_code": "", "difficulty": "easy",
             "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
             "private_test_cases": json.dumps([{"input": "4 5\n", "output": "9\n", "testtype": "stdin"}]),
             "metadata": "{}"} for i in range(3)]
    (d / "livecodebench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_distill_eval_suite_r1_on_the_embedded_model_writes_the_report(tmp_path):
    """The whole path on CPU: local slices of the four benchmarks (GPQA and LiveCodeBench in the hub's
    schema), the R1 protocol with k, problems and tokens cut down for a CPU, one report."""
    _gpqa(tmp_path)
    _lcb(tmp_path)
    env = {**os.environ, "DISTILL_BENCHMARKS": os.pathsep.join([str(tmp_path), str(SHARED)])}
    out = tmp_path / "suite"
    cmd = [sys.executable, "-m", "distill", "eval", "--model", "embedded", "--suite", "r1", "--k", "2", "--limit", "1",
           "--out", str(out), "--no-progress", "--set", "sampling.max_tokens=24", "--set", "eval.bootstrap=200"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    doc = json.loads((out / "report.json").read_text())
    assert set(doc["benchmarks"]) == {"aime24", "math500", "gpqadiamond", "livecodebench"}
    for name in ("AIME 2024 pass@1", "MATH-500 pass@1", "GPQA Diamond pass@1", "LiveCodeBench pass@1"):
        cell = doc["measured"][name]
        assert cell["problems"] == 1 and cell["k"] == 2 and cell["low"] <= cell["value"] <= cell["high"], name
    ev = json.loads((out / "gpqa_diamond" / "eval.json").read_text())
    s = ev["settings"]
    assert s["protocol"]["name"] == "r1" and "k=2 (the protocol's 8)" in s["protocol"]["overridden"]
    assert s["prompt"]["template"] == "r1" and s["prompt"]["force_think"] and s["sampling"]["temperature"] == 0.6
    assert s["benchmark_format"] == "gpqa" and s["benchmark_options"] == {"seed": 0}
    assert all(x["completion"].startswith("<think>\n") for x in ev["samples"])
    lcb = json.loads((out / "livecodebench" / "eval.json").read_text())
    assert lcb["settings"]["benchmark_options"]["start"] == "2024-08-01"
    assert "tests_passed" in lcb["figures"]  # scored as code problems (the 24-token answers are cut, so they fail)
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 0
    assert s["prompt"]["instruction"].startswith("Answer the following multiple choice question.")
    md = (out / "report.md").read_text()
    assert "## Current open students (published)" in md and "OpenReasoning-Nemotron-7B (published)" in md
    assert doc["protocol"]["max_tokens"] == 24 and doc["protocol"]["k"]["aime24"] == 2
    assert doc["protocol"]["sets"]["gpqadiamond"] == "simple-evals' prompt"
    nemo = doc["protocol_differences"][-1]["differs_from_this_run"]
    assert "max_tokens 65536 (this run: 24)" in nemo and "aime24 k=64 (this run: 2)" in nemo


def test_a_thinking_budget_is_a_protocol_difference_from_the_published_rows():
    from distill.suite import R1_PROTOCOL, protocol_differences, run_protocol

    st = {"sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768, "thinking_token_budget": 4096},
          "k": 64}
    run = run_protocol({"aime24": {"settings": st}})
    assert any("thinking_token_budget: none in the source (this run: 4096)" in d
               for d in protocol_differences(R1_PROTOCOL, run))
    st["sampling"]["thinking_token_budget"] = None
    assert not any("thinking_token_budget" in d for d in protocol_differences(R1_PROTOCOL, run_protocol(
        {"aime24": {"settings": st}})))
