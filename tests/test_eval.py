"""distill eval: the estimators against hand values, intervals that cover, benchmarks by name, a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.config import EvalConfig, load_recipe
from distill.data import DataError, load_problems
from distill.evaluate import (
    HUB_BENCHMARKS,
    EvalError,
    bootstrap_ci,
    compare,
    default_ks,
    evaluate,
    majority,
    paired_bootstrap,
    pass_at_k,
    resolve_benchmark,
)

ROOT = Path(__file__).resolve().parents[1]


# -- estimators ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "c", "k", "want"), [
    (4, 1, 1, 0.25),                 # pass@1 is c/n
    (4, 1, 2, 0.5),                  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 3, 0.9),                  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 5, 1 - 21 / 252),        # C(7,5) = 21, C(10,5) = 252
    (8, 0, 4, 0.0),
    (8, 8, 1, 1.0),
    (6, 4, 3, 1.0),                  # n - c < k: every draw of 3 holds a correct one
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want)


def test_pass_at_k_is_the_mean_over_all_subsets():
    from itertools import combinations

    hits = [1, 0, 0, 1, 0, 0, 0]
    for k in range(1, 8):
        subsets = list(combinations(hits, k))
        assert pass_at_k(7, 2, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k(3, 1, 4)


def test_default_ks_are_powers_of_two_up_to_k():
    assert default_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(6, [3]) == [1, 2, 3, 4, 6]


def test_cons_majority_wins_and_wrong_majority_scores_zero():
    assert majority(["11", "11", "12"], [True, True, False])["score"] == 1.0
    m = majority(["12", "12", "11", None], [False, False, True, False])
    assert m["score"] == 0.0 and m["answer"] == "12" and m["votes"] == 2


def test_cons_tie_scores_the_expected_value_of_a_random_pick():
    m = majority(["11", "12"], [True, False])
    assert m["score"] == 0.5 and m["tied"] == 2
    assert majority(["1", "2", "3", "3", "4", "4"], [False] * 4 + [True] * 2)["score"] == 0.5
    assert majority(["5", "5", "6", "6", "7", "7"], [True, True, False, False, False, False])["score"] == pytest.approx(1 / 3)
    # the order of the samples does not change a tie's score
    assert majority(["12", "11"], [False, True])["score"] == 0.5


def test_cons_merges_equivalent_answers_and_ignores_non_answers():
    from distill.evaluate import _equivalent

    m = majority(["0.5", "\\frac{1}{2}", "3", None, ""], [True, True, False, False, False], _equivalent)
    assert m["votes"] == 2 and m["score"] == 1.0
    assert majority([None, None], [False, False]) == {"answer": None, "votes": 0, "score": 0.0, "tied": 0}


def test_cons_groups_answers_by_verified_equality_not_by_their_strings():
    """Two right answers written differently are one group (both equal the gold); two equal wrong ones are
    another: a tie, 0.5; grouped by strings the wrong pair would win (0)."""
    from distill.evaluate import _equivalent, voted_answer

    m = majority(["[0, 1]", "0 \\le x \\le 1", "2", "2"], [True, True, False, False], _equivalent)
    assert m["score"] == 0.5 and m["tied"] == 2 and m["votes"] == 2
    # wrong answers that are the same value vote together too
    m = majority(["\\frac{1}{3}", "1/3", "0.5"], [False, False, True], _equivalent)
    assert m["score"] == 0.0 and m["votes"] == 2
    # what a sample votes with: its last box as written; a multiple-choice letter as read
    v = {"pass": True, "value": {"status": "correct", "gold": "[0,1]", "pred": "Interval(0, 1)"}}
    assert voted_answer("so \\boxed{0 \\le x \\le 1}", v) == "0 \\le x \\le 1"
    mc = {"pass": True, "value": {"status": "correct", "gold": "C", "pred": "C"}}
    assert voted_answer("\\boxed{\\mathbf{C}}", mc) == "C"


def test_bootstrap_interval_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(1)
    p, trials, hits = 0.3, 300, 0
    for t in range(trials):
        # 80 problems x 4 samples each: per-problem pass@1 values
        per_problem = rng.binomial(4, p, size=80) / 4
        _, lo, hi = bootstrap_ci(per_problem, reps=1000, seed=t)
        hits += lo <= p <= hi
    assert 0.90 <= hits / trials <= 0.985, hits / trials


def test_bootstrap_interval_narrows_with_more_problems():
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.binomial(1, 0.5, 30), seed=0)
    big = bootstrap_ci(rng.binomial(1, 0.5, 3000), seed=0)
    assert (big[2] - big[1]) < (small[2] - small[1]) / 5


def test_paired_bootstrap_sees_a_shift_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 60)  # problems of very different difficulty
    a, b = np.clip(base + 0.05, 0, 1), base
    d = paired_bootstrap(a, b)
    assert d["low"] > 0 and d["diff"] == pytest.approx(float((a - b).mean()))
    same = paired_bootstrap(b, b)
    # no problem differs: the bootstrap cannot vary, and a point [0, 0] would claim certainty
    assert same["diff"] == 0 and same["low"] < 0 < same["high"] and same["method"].startswith("newcombe")


# -- benchmarks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [[0.0] * 30, [1.0] * 30, [0.0] * 5, [1.0] * 500, [0.5] * 40])
def test_no_proportion_gets_a_zero_width_interval(values):
    from distill.evaluate import interval, wilson

    f = interval(values, reps=300)
    assert f["low"] <= f["value"] <= f["high"] and f["high"] - f["low"] > 0 and f["method"] == "wilson"
    assert 0.0 <= f["low"] and f["high"] <= 1.0
    n = len(values)
    if values[0] == 0.0:  # the Wilson upper bound for 0 of n: z^2 / (n + z^2)
        assert f["high"] == pytest.approx(1.959964 ** 2 / (n + 1.959964 ** 2), rel=1e-4)
    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(0.3968, abs=1e-3) and hi == pytest.approx(0.8922, abs=1e-3)  # textbook values
    # a varying sample keeps the bootstrap interval
    assert interval([0.0, 1.0] * 20, reps=300)["method"] == "bootstrap"


def test_paired_all_solved_against_none_solved_is_not_a_point():
    d = paired_bootstrap(np.ones(20), np.zeros(20))
    assert d["diff"] == 1.0 and d["low"] < 1.0 and d["high"] >= 1.0


def test_benchmark_names_resolve_to_the_shared_copies(monkeypatch, shared_data):
    monkeypatch.setenv("DISTILL_BENCHMARKS", str(shared_data))
    sizes = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319}
    for name, size in sizes.items():
        pc = resolve_benchmark(name, EvalConfig())
        probs = load_problems(pc)
        assert len(probs) == size and pc.name == name
        assert all(p.answer for p in probs)
    assert resolve_benchmark("AIME-24", EvalConfig(limit=3)).limit == 3


def test_benchmark_from_the_recipe_wins_over_the_environment(monkeypatch, shared_data, tmp_path):
    monkeypatch.setenv("DISTILL_BENCHMARKS", str(shared_data))
    pc = resolve_benchmark("aime24", EvalConfig(benchmarks={"aime24": str(shared_data / "aime25.jsonl")}))
    assert pc.source.endswith("aime25.jsonl")
    monkeypatch.setenv("DISTILL_BENCHMARK_AMC23", str(tmp_path / "nope.jsonl"))
    with pytest.raises(EvalError, match="does not exist"):
        resolve_benchmark("amc23", EvalConfig())


def test_benchmark_without_a_local_copy_is_its_hub_dataset(monkeypatch):
    monkeypatch.delenv("DISTILL_BENCHMARKS", raising=False)
    for name, (hub, subset, split, fields) in HUB_BENCHMARKS.items():
        monkeypatch.delenv(f"DISTILL_BENCHMARK_{name.upper()}", raising=False)
        pc = resolve_benchmark(name, EvalConfig())
        assert (pc.source, pc.subset, pc.split, pc.fields) == (hub, subset, split, fields)
    # offline, the loader fails with the dataset named and a fix
    with pytest.raises(DataError, match="HuggingFaceH4/MATH-500"):
        load_problems(resolve_benchmark("math500", EvalConfig()))
    with pytest.raises(EvalError, match="not a benchmark name"):
        resolve_benchmark("math600", EvalConfig())


def test_gsm8k_answers_come_out_of_the_worked_solution(tmp_path):
    f = tmp_path / "gsm.jsonl"
    f.write_text(json.dumps({"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}) + "\n"
                 + json.dumps({"question": "big?", "answer": "so\n#### 1,234"}) + "\n")
    pc = resolve_benchmark(str(f), EvalConfig(fields=HUB_BENCHMARKS["gsm8k"][3]))
    assert [p.answer for p in load_problems(pc)] == ["4", "1,234"]
    f.write_text(json.dumps({"question": "x", "answer": "no marker"}) + "\n")
    with pytest.raises(DataError, match="line 1.*answer_pattern"):
        load_problems(pc)


def test_any_jsonl_with_problem_and_answer_works_without_ids(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    probs = load_problems(resolve_benchmark(str(f), EvalConfig()))
    assert len(probs) == 3 and len({p.id for p in probs}) == 3


# -- end to end on the embedded model --------------------------------------------------------------

def _bench(tmp_path: Path) -> Path:
    f = tmp_path / "tiny.jsonl"
    f.write_text("".join(json.dumps({"id": f"t{i}", "problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                         for i, (a, b) in enumerate([(2, 3), (4, 4), (1, 6)])))
    return f


def test_eval_end_to_end_on_a_tiny_benchmark(tmp_path, teacher):
    r = load_recipe(None, ["prompt.template=plain", "sampling.max_tokens=24", "eval.bootstrap=200", "eval.workers=0"])
    res = evaluate(r, "embedded", str(_bench(tmp_path)), tmp_path / "ev", k=3, progress=False, teacher=teacher)
    d = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert len(d["samples"]) == 9 and len(d["problems"]) == 3
    assert d["settings"]["k"] == 3 and d["settings"]["sampling"]["temperature"] == 0.6
    assert d["settings"]["sampling"]["top_p"] == 0.95 and "transformers" in d["settings"]["versions"]
    # every figure is recomputable from the samples in the file
    per = {}
    for s in d["samples"]:
        assert set(s["verdicts"]) == {"complete", "format", "correct"}
        assert s["correct"] == (s["verdicts"]["correct"]["pass"] is True)
        per.setdefault(s["problem_id"], []).append(s["correct"])
    assert d["figures"]["pass@1"]["value"] == pytest.approx(np.mean([np.mean(v) for v in per.values()]))
    assert d["figures"]["pass@2"]["value"] == pytest.approx(
        np.mean([pass_at_k(3, sum(v), 2) for v in per.values()]))
    trunc = np.mean([s["finish_reason"] == "length" for s in d["samples"]])
    assert d["figures"]["truncated"]["value"] == pytest.approx(trunc)
    for f in d["figures"].values():
        assert f["low"] <= f["value"] <= f["high"]
    assert res.figures == d["figures"] and (tmp_path / "ev" / "eval.png").stat().st_size > 0
    # a rerun generates nothing and scores the same samples the same way
    again = evaluate(r, "embedded", str(_bench(tmp_path)), tmp_path / "ev", k=3, progress=False, teacher=teacher)
    assert again.settings["generation"]["generated"] == 0 and again.figures == res.figures

    # compare: a run against itself is a zero difference; against a run with one problem flipped,
    # the difference is exactly that problem's share
    c = compare(tmp_path / "ev", tmp_path / "ev" / "eval.json")
    assert c["figures"]["pass@1"]["diff"] == 0 and not c["warnings"]
    worse = json.loads(json.dumps(d))
    worse["problems"][0]["pass@1"] = 1.0 - d["problems"][0]["pass@1"]
    (tmp_path / "b.json").write_text(json.dumps(worse))
    c = compare(tmp_path / "ev", tmp_path / "b.json")
    assert c["figures"]["pass@1"]["diff"] == pytest.approx((d["problems"][0]["pass@1"] - worse["problems"][0]["pass@1"]) / 3)


def test_compare_refuses_runs_on_different_problems(tmp_path):
    a = {"settings": {"k": 2}, "figures": {"pass@1": {}}, "problems": [{"id": "x", "pass@1": 1.0}]}
    b = {"settings": {"k": 4}, "figures": {"pass@1": {}}, "problems": [{"id": "y", "pass@1": 0.0}]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(EvalError, match="share no problem ids"):
        compare(tmp_path / "a.json", tmp_path / "b.json")
    b["problems"].append({"id": "x", "pass@1": 0.0})
    (tmp_path / "b.json").write_text(json.dumps(b))
    c = compare(tmp_path / "a.json", tmp_path / "b.json")
    assert c["problems"] == 1 and any("settings differ in k" in w for w in c["warnings"])
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(EvalError, match="not valid JSON"):
        compare(tmp_path / "a.json", tmp_path / "c.json")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_cli_eval_errors_are_one_clear_message(tmp_path):
    out = _cli("eval", "--model", "embedded", "--benchmark", "math600", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not a benchmark name" in out.stdout + out.stderr
    out = _cli("eval", "--model", "embedded", "--benchmark", "gsm8k", "--backend", "tgi", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "use hf, vllm or openai" in out.stdout + out.stderr
    (tmp_path / "bad.json").write_text("[]")
    out = _cli("eval", "--compare", str(tmp_path / "bad.json"), str(tmp_path / "bad.json"))
    assert out.returncode == 2 and "not an eval.json" in out.stdout + out.stderr


@pytest.mark.slow
def test_cli_eval_on_gsm8k_by_name_and_compare(tmp_path, shared_data):
    import os

    env = {**os.environ, "DISTILL_BENCHMARKS": str(shared_data)}
    common = ["--k", "2", "--limit", "2", "--set", "sampling.max_tokens=16", "--set", "prompt.template=plain",
              "--no-progress"]
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "-m", "distill", "eval", "--model", "embedded", "--benchmark", "gsm8k",
                              "--out", str(tmp_path / name), *common, "--set", f"sampling.seed={ord(name)}"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        assert "pass@1" in out.stdout + out.stderr and "cons@2" in out.stdout + out.stderr
    d = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert [p["id"] for p in d["problems"]] == ["gsm8k_test_0", "gsm8k_test_1"]
    assert d["problems"][0]["answer"] == "18"
    out = _cli("eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert out.returncode == 0 and "paired" in out.stdout + out.stderr


# -- a model is its weights; one verdict with the filter (issue 14) -------------------------------

def _tiny_model(d: Path, seed: int) -> Path:
    """A random 2-layer Llama with the embedded tokenizer, built from a config (no download)."""
    from tests.conftest import tiny_llama

    return tiny_llama(d, seed, hidden=32, heads=2, kv_heads=1, max_positions=256)


def _eval_dir(model: Path, tmp_path: Path, out: Path):
    from distill.config import TeacherConfig
    from distill.teachers.hf import HFTeacher

    r = load_recipe(None, ["prompt.template=plain", "sampling.max_tokens=12", "eval.bootstrap=100", "eval.workers=0"])
    t = HFTeacher(TeacherConfig(model=str(model), batch_size=8))
    try:
        return evaluate(r, str(model), str(_bench(tmp_path)), out, k=2, progress=False, teacher=t)
    finally:
        t.close()


def test_the_same_weights_in_two_directories_give_identical_samples(tmp_path):
    import shutil

    a = _tiny_model(tmp_path / "runs" / "a" / "student", seed=1)
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    (b / "train_summary.json").write_text("{}")  # files that are not the model do not matter
    ra = _eval_dir(a, tmp_path, tmp_path / "ea")
    rb = _eval_dir(b, tmp_path, tmp_path / "eb")
    assert [s["key"] for s in ra.samples] == [s["key"] for s in rb.samples]
    assert [s["completion"] for s in ra.samples] == [s["completion"] for s in rb.samples]
    assert ra.settings["model_identity"]["key"].startswith("weights:")
    assert ra.settings["model_identity"] == rb.settings["model_identity"]


def test_changed_weights_in_place_are_evaluated_anew_never_reported_from_old_samples(tmp_path, capsys):
    m = _tiny_model(tmp_path / "student", seed=1)
    out = tmp_path / "ev"
    first = _eval_dir(m, tmp_path, out)
    _tiny_model(m, seed=2)  # a retrain into the same directory
    second = _eval_dir(m, tmp_path, out)
    assert second.settings["generation"]["generated"] == 6  # all of them, none reused
    assert not {s["key"] for s in first.samples} & {s["key"] for s in second.samples}
    assert first.settings["model_identity"] != second.settings["model_identity"]
    said = capsys.readouterr()
    assert "its weights, tokenizer or template changed" in " ".join((said.out + said.err).split())
    # the tokenizer's chat template is part of the model too
    cfg = json.loads((m / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ messages[0]['content'] }}"
    (m / "tokenizer_config.json").write_text(json.dumps(cfg))
    from distill.models import model_identity

    assert model_identity(str(m))["key"] != second.settings["model_identity"]["key"]


def test_default_out_is_unique_per_model_path(tmp_path):
    from distill.evaluate import default_out

    for d in ("a", "b"):
        (tmp_path / "runs" / d / "student").mkdir(parents=True)
    a = default_out(str(tmp_path / "runs" / "a" / "student"), "math500", 4)
    b = default_out(str(tmp_path / "runs" / "b" / "student"), "math500", 4)
    assert a != b and a.name.startswith("student-") and a.name.endswith("-math500-k4")
    assert default_out("Qwen/Qwen2.5-Math-7B", "aime24", 8).name == "Qwen2.5-Math-7B-aime24-k8"


class _Canned:
    """A teacher whose completions are given: each request answers with the text for its problem."""

    backend, model_name, revision = "hf", "canned", None

    def __init__(self, texts: dict[str, tuple[str, str]]):
        self.texts = texts

    def generate(self, requests, sampling):
        from distill.teachers.base import Completion

        out = []
        for r in requests:
            q = r.prompt.messages[-1]["content"]
            text, reason = next(v for k, v in self.texts.items() if k in q)
            out.append(Completion(r.key, text, reason, 10, 20))
        yield out

    def close(self):
        pass


def test_a_truncated_sample_with_a_boxed_answer_fails_in_eval_as_in_the_filter(tmp_path):
    from distill.config import FilterConfig
    from distill.filter import filter_samples

    canned = _Canned({"2 + 3": ("5 ... so the answer is \\boxed{5} and then we", "length"),
                      "4 + 4": ("4 + 4 = 8, so the answer is \\boxed{8}.", "stop"),
                      "1 + 6": ("1 + 6 = 7, so the answer is \\boxed{", "stop")})  # cut, no finish_reason says so
    r = load_recipe(None, ["prompt.template=plain", "eval.bootstrap=100", "eval.workers=0"])
    res = evaluate(r, "embedded", str(_bench(tmp_path)), tmp_path / "ev", k=2, progress=False, teacher=canned)
    by = {p["id"]: p for p in res.problems}
    assert by["t0"]["pass@1"] == 0.0 and by["t1"]["pass@1"] == 1.0 and by["t2"]["pass@1"] == 0.0
    assert all(s["verdicts"]["correct"]["value"]["status"] == "unfinished"
               for s in res.samples if s["problem_id"] in ("t0", "t2"))
    # the filter gives the same verdict on the same samples
    fcfg = FilterConfig.model_validate({"workers": 0, "dedup": {"enabled": False}})  # t1's two samples are alike
    rep = filter_samples(tmp_path / "ev" / "samples", tmp_path / "f", fcfg, progress=False)
    kept = {json.loads(x)["problem_id"] for x in (tmp_path / "f" / "kept.jsonl").read_text().splitlines()}
    assert kept == {"t1"} and rep["kept"] == 2
    # intervals: 1 of 3 problems solved is neither 0 nor 100%, and the 0%/100% figures are not points
    for name, f in res.figures.items():
        assert name == "mean_tokens" or f["high"] > f["low"], name


def test_eval_judges_against_the_benchmark_gold_as_it_is_now(tmp_path):
    canned = _Canned({"2 + 3": ("\\boxed{5}", "stop"), "4 + 4": ("\\boxed{8}", "stop"), "1 + 6": ("\\boxed{7}", "stop")})
    r = load_recipe(None, ["prompt.template=plain", "eval.bootstrap=100", "eval.workers=0"])
    bench = _bench(tmp_path)
    assert evaluate(r, "embedded", str(bench), tmp_path / "ev", k=1, progress=False,
                    teacher=canned).figures["pass@1"]["value"] == 1.0
    bench.write_text(bench.read_text().replace('"answer": "8"', '"answer": "9"'))  # a corrected gold
    again = evaluate(r, "embedded", str(bench), tmp_path / "ev", k=1, progress=False, teacher=canned)
    assert again.settings["generation"]["generated"] == 0
    assert again.figures["pass@1"]["value"] == pytest.approx(2 / 3)


def test_a_weight_changed_in_any_byte_changes_the_models_identity(tmp_path, monkeypatch):
    """The whole file is hashed (once; then cached by path, size, times and inode): one byte changed in place,
    same size, header and even modification time, between where a sampled fingerprint would look."""
    import os

    from safetensors.torch import save_file

    import distill.models as models

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    import torch

    save_file({"w": torch.zeros(4 << 20, dtype=torch.float32)}, str(d / "model.safetensors"))  # 16 MB
    first = models.fingerprint_dir(d)
    f = d / "model.safetensors"
    st = f.stat()
    with f.open("r+b") as fh:  # one byte at 3/7 of the data: no sampled chunk covers it
        fh.seek(st.st_size * 3 // 7 + 12345)
        fh.write(b"\x01")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time put back
    second = models.fingerprint_dir(d)
    assert second["fingerprint"] != first["fingerprint"]
    # hashed once: the cache answers for the same file afterwards
    digest, computed = models.file_sha256(f)
    assert not computed and digest in models._read_hash_cache().values()
    models._fingerprints.clear()
    assert models.fingerprint_dir(d) == second


def test_eval_spread_over_shards_then_scored_once(tmp_path):
    """Each shard (a GPU, a node) generates its problems into the one store; the run without --shard
    generates nothing and scores every problem, with the same samples as an unsharded run."""
    from distill.config import TeacherConfig
    from distill.teachers.hf import HFTeacher

    m = _tiny_model(tmp_path / "m", seed=1)
    r = load_recipe(None, ["prompt.template=plain", "sampling.max_tokens=8", "eval.bootstrap=100", "eval.workers=0"])
    t = HFTeacher(TeacherConfig(model=str(m), batch_size=8))
    try:
        out = tmp_path / "sharded"
        for i in range(2):
            assert evaluate(r, str(m), str(_bench(tmp_path)), out, k=2, progress=False, teacher=t, shard=(i, 2)) is None
        from distill.data import shard_of

        parts = sorted(p.name for p in (out / "samples" / "data").glob("part-*"))
        assert parts == sorted({f"part-{shard_of(f't{i}', 2):05d}-of-00002.jsonl" for i in range(3)})
        res = evaluate(r, str(m), str(_bench(tmp_path)), out, k=2, progress=False, teacher=t)
        whole = evaluate(r, str(m), str(_bench(tmp_path)), tmp_path / "whole", k=2, progress=False, teacher=t)
    finally:
        t.close()
    assert res.settings["generation"]["generated"] == 0 and res.settings["problems"] == 3
    assert [s["completion"] for s in res.samples] == [s["completion"] for s in whole.samples]


def test_compare_interval_and_sign_probability_agree():
    """One bootstrap (or, where resampling cannot vary, one interval) gives both: 0 inside the interval
    exactly when P(other sign) is at least the interval's tail share."""
    import numpy as np

    from distill.evaluate import paired_bootstrap

    rng = np.random.default_rng(0)
    cases = [([1.0], [0.0]), ([1.0, 1.0], [0.0, 0.0]), ([0.5] * 3, [0.5] * 3)]
    cases += [(list(rng.random(n).round(1)), list(rng.random(n).round(1))) for n in (3, 8, 40, 200) for _ in range(5)]
    for a, b in cases:
        r = paired_bootstrap(a, b, reps=4000, confidence=0.95, seed=1)
        inside = r["low"] <= 0 <= r["high"]
        assert inside == (r["p_sign"] >= 0.025) or abs(r["p_sign"] - 0.025) < 0.01, (a, b, r)
    r = paired_bootstrap([1.0], [0.0])  # the case of the issue: a wide interval, never P = 0
    assert r["low"] < 0 < r["high"] and r["p_sign"] > 0.025
