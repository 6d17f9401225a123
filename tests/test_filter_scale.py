"""The streaming filter: same verdicts as the in-memory judge, resumable, sharded and merged, code tests
stored once per problem."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.config import ExportConfig, FilterConfig
from distill.data import DataError
from distill.filter import STATE, Tally, filter_samples, merge_filtered, read_samples
from distill.verify.batch import gold_health, judge
from distill.verify.checks import ORDER

ROOT = Path(__file__).resolve().parents[1]
THINK = "<think>\nWe add {a} and {b} to get {c}. Checking: {c} - {b} = {a}, so it holds{tail}.\n</think>\n\n"


def trace(a, b, c, tail="", final=None, close=True):
    t = THINK.format(a=a, b=b, c=c, tail=tail)
    if not close:
        t = t.replace("\n</think>\n\n", "\n")
    return t + (final if final is not None else f"The answer is $\\boxed{{{c}}}$.")


def mixed_input(n_problems=24):
    """Every kind of verdict, from two teachers, three sources, with repeated keys and duplicates."""
    rows = []
    for p in range(n_problems):
        a, b = p + 2, 3 * p + 1
        c = a + b
        gold = "\\begin{" if p % 4 == 3 else str(c)  # golds no parser reads
        src = ("math", "gsm8k", "amc")[p % 3]
        teacher = "r1" if p % 2 else "qwq-style"
        for i in range(6):
            if i == 0:
                comp = trace(a, b, c)
            elif i == 1:
                comp = trace(a, b, c)  # exact duplicate of sample 0
            elif i == 2:
                comp = trace(a, b, c, tail=" indeed")  # near duplicate
            elif i == 3:
                comp = trace(a, b, c + 1, tail=f" after checking the sum of {a} and {b} twice over")  # wrong
            elif i == 4:
                comp = trace(a, b, c, close=False) if p % 2 else trace(a, b, c, final="no box here")
            else:
                comp = trace(a, b, c, tail=f" and the parity of {c} agrees with {a} plus {b} as computed")
            rows.append({"key": f"k{p}-{i}", "problem_id": f"p{p}", "sample_index": i, "source": src,
                         "problem": f"What is {a} + {b}? Give the answer as a number.", "answer": gold,
                         "completion": comp, "finish_reason": "stop", "completion_tokens": 30 + i,
                         "teacher": {"model": teacher}})
    rows.append(dict(rows[28], completion="a repeated key: ignored"))  # a later line of key k4-4: the first wins
    rows.append(dict(rows[0]))  # an exact repeated line
    return rows


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


COUNTS = ("total", "kept", "details", "by_source", "shapes", "gold_health", "bad_lines_skipped", "code")


def counts(report: dict) -> dict:
    out = {k: report.get(k) for k in COUNTS}
    out["checks"] = {c: {k: v for k, v in x.items() if k != "seconds"} for c, x in report["checks"].items()}
    return out


def test_streaming_filter_gives_the_in_memory_judges_verdicts_and_report(tmp_path):
    inp = write(tmp_path / "in.jsonl", mixed_input())
    cfg = FilterConfig(workers=2)
    cfg.dedup.max_per_problem = 2
    cfg.complete.teacher_close_min = 3
    report = filter_samples(inp, tmp_path / "out", cfg, progress=False)

    samples, _ = read_samples(inp)
    verdicts, _ = judge(samples, cfg.model_copy(update={"workers": 0}), progress=False)
    tally = Tally()
    for s, v in zip(samples, verdicts, strict=True):
        tally.add(s, v, None)
    mem = tally.report(cfg, inp, {}, 0.0, [], gold_health(samples, verdicts))

    rows = {r["key"]: r for r in lines(tmp_path / "out" / "kept.jsonl") + lines(tmp_path / "out" / "rejected.jsonl")}
    assert len(rows) == len(samples) == report["total"] == 24 * 6
    for s, v in zip(samples, verdicts, strict=True):
        got = rows[s["key"]]
        assert got["kept"] == v["kept"] and got["reject_reason"] == v["reject_reason"], s["key"]
        assert got["verdicts"] == {c: v[c] for c in ORDER}, s["key"]
    assert counts(report) == counts(mem)
    # the input exercised every set-level rule
    reasons = report["checks"]
    assert reasons["dedup"]["failed"] > 0 and report["details"]["correct"]["gold_unparseable"] > 0
    assert any("missing_close_tag" in json.dumps(r["verdicts"]["complete"]) for r in rows.values())
    assert sum(h["unparseable"] for h in report["gold_health"].values()) == 6
    assert rows["k4-4"]["completion"] != "a repeated key: ignored"  # first line of a key wins
    assert (tmp_path / "out" / "lengths.png").stat().st_size > 0 and (tmp_path / "out" / "report.md").is_file()
    train = lines(tmp_path / "out" / "train.jsonl")
    assert sorted(r["key"] for r in train) == sorted(k for k, r in rows.items() if r["kept"])


def test_an_interrupted_run_keeps_the_old_outputs_and_the_rerun_judges_only_the_rest(tmp_path, monkeypatch):
    import distill.filter.stream as F

    inp = write(tmp_path / "in.jsonl", mixed_input(8))
    out = tmp_path / "out"
    cfg = FilterConfig(workers=0)
    ref = filter_samples(inp, tmp_path / "ref", cfg, progress=False)  # the clean run to compare with

    old = cfg.model_copy(deep=True)
    old.readable.enabled = False
    filter_samples(inp, out, old, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}

    real, calls = F.run_checks, {"n": 0}

    def interrupted(item):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(item)

    monkeypatch.setattr(F, "run_checks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        filter_samples(inp, out, cfg, progress=False)
    monkeypatch.setattr(F, "run_checks", real)
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))

    rep = filter_samples(inp, out, cfg, progress=False)
    assert rep["verdicts_reused"] == 19 and rep["verdicts_judged"] == 48 - 19
    for name in ("kept.jsonl", "rejected.jsonl", "train.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert counts(rep) == counts(ref)

    # Set-level settings change no per-sample verdict: all reused, and the cap applies.
    capped = cfg.model_copy(deep=True)
    capped.dedup.max_per_problem = 1
    rep = filter_samples(inp, out, capped, progress=False)
    assert rep["verdicts_judged"] == 0 and rep["verdicts_reused"] == 48
    assert rep["kept"] == len({r["problem_id"] for r in lines(tmp_path / "ref" / "kept.jsonl")})
    # A changed sample is judged again; the others are not.
    rows = mixed_input(8)
    rows[3]["completion"] = trace(2, 1, 4)
    inp2 = write(tmp_path / "in2.jsonl", rows)
    rep = filter_samples(inp2, out, cfg, progress=False)
    assert rep["verdicts_judged"] == 1


@pytest.mark.slow
def test_a_filter_killed_mid_run_resumes_from_its_saved_verdicts(tmp_path):
    """`distill filter` as a user runs it, SIGKILLed while judging: the rerun reuses what was saved."""
    rows = []
    for p in range(500):
        for i in range(4):
            rows.append({"key": f"k{p}-{i}", "problem_id": f"p{p}", "sample_index": i, "problem": f"What is {p} + 1?",
                         "answer": str(p + 1), "completion": trace(p, 1, p + 1 + (i == 3), tail=" " + "and so on " * i)})
    inp = write(tmp_path / "in.jsonl", rows)
    cli = [sys.executable, "-m", "distill", "filter", "--in", str(inp), "--no-progress", "--set", "filter.workers=1"]
    proc = subprocess.Popen(cli + ["--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    state = tmp_path / "out" / STATE
    saved = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
                saved = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        except sqlite3.Error:
            continue
        if saved >= 300:
            break
    assert proc.poll() is None, "the filter finished before it could be killed: make the input larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert saved >= 300 and not (tmp_path / "out" / "kept.jsonl").exists()

    subprocess.run(cli + ["--out", str(tmp_path / "out")], check=True, capture_output=True)
    subprocess.run(cli + ["--out", str(tmp_path / "ref")], check=True, capture_output=True)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["verdicts_reused"] >= 300 and rep["verdicts_reused"] + rep["verdicts_judged"] == 2000
    for name in ("kept.jsonl", "rejected.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def _cli_env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_two_shards_from_the_slurm_array_script_merged_equal_one_run(tmp_path):
    inp = write(tmp_path / "in.jsonl", mixed_input())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("filter:\n  workers: 1\n  dedup:\n    max_per_problem: 2\n  complete:\n    teacher_close_min: 3\n")
    script = ROOT / "recipes" / "cluster" / "filter-array.sbatch"
    for i in range(2):  # what Slurm runs for each array task
        env = _cli_env() | {"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "2"}
        subprocess.run(["bash", str(script), str(inp), str(tmp_path / "f"), str(recipe)], env=env, check=True,
                       capture_output=True)
    reps = [json.loads((tmp_path / "f" / f"shard-{i}" / "report.json").read_text()) for i in range(2)]
    assert all(r["total"] > 0 for r in reps) and sum(r["total"] for r in reps) == 24 * 6
    subprocess.run([sys.executable, "-m", "distill", "filter", "--merge", str(tmp_path / "f" / "shard-*"),
                    "--out", str(tmp_path / "f" / "all"), "--no-progress"], check=True, capture_output=True,
                   env=_cli_env())
    subprocess.run([sys.executable, "-m", "distill", "filter", "--in", str(inp), "--out", str(tmp_path / "one"),
                    "--recipe", str(recipe), "--no-progress"], check=True, capture_output=True, env=_cli_env())
    merged = json.loads((tmp_path / "f" / "all" / "report.json").read_text())
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert counts(merged) == counts(one) and merged["merged_from"] and merged["kept"] > 0
    for name in ("kept.jsonl", "rejected.jsonl", "train.jsonl"):
        a = sorted(json.dumps(r, sort_keys=True) for r in lines(tmp_path / "f" / "all" / name))
        b = sorted(json.dumps(r, sort_keys=True) for r in lines(tmp_path / "one" / name))
        assert a == b, name
    assert (tmp_path / "f" / "all" / "report.md").read_text().count("2 shards merged") == 1

    with pytest.raises(DataError, match=r"missing \[1\].*distill filter --shard 1/2"):
        merge_filtered([tmp_path / "f" / "shard-0"], tmp_path / "bad")
    other = write(tmp_path / "other.jsonl", mixed_input(5))
    filter_samples(other, tmp_path / "o1", FilterConfig(workers=0), progress=False, shard=(1, 2))
    with pytest.raises(DataError, match="different inputs"):
        merge_filtered([tmp_path / "f" / "shard-0", tmp_path / "o1"], tmp_path / "bad")


def test_parquet_export_streams_and_merges(tmp_path):
    import datasets

    inp = write(tmp_path / "in.jsonl", mixed_input(6))
    cfg, ex = FilterConfig(workers=0), ExportConfig(format="parquet")
    one = filter_samples(inp, tmp_path / "one", cfg, ex, progress=False)
    for i in range(2):
        filter_samples(inp, tmp_path / f"s{i}", cfg, ex, progress=False, shard=(i, 2))
    merge_filtered([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all", progress=False)
    a = datasets.load_dataset("parquet", data_files=str(tmp_path / "one" / "train.parquet"), split="train")
    b = datasets.load_dataset("parquet", data_files=str(tmp_path / "all" / "train.parquet"), split="train")
    assert a.num_rows == b.num_rows == one["kept"] > 0 and sorted(a["key"]) == sorted(b["key"])
    assert a[0]["messages"][-1]["content"].startswith("<think>\n")


def _codecontests(path: Path, n_problems: int = 3, n_tests: int = 40) -> Path:
    """CodeContests-shaped rows: a description and private tests (inputs and outputs)."""
    rows = []
    for p in range(n_problems):
        ins = [f"{i} {p}\n" + "7 " * 200 + "\n" for i in range(n_tests)]
        rows.append({"name": f"cc-{p}", "description": f"Read two integers a and b and print a + b + {p}.",
                     "private_tests": {"input": ins, "output": [f"{i + p + p}\n" for i in range(n_tests)]},
                     "time_limit": {"seconds": 2, "nanos": 0}})
    return write(path, rows)


def test_a_codecontests_store_holds_each_problems_tests_once(tmp_path, teacher):
    from distill.generate import generate
    from distill.store import SampleStore, merge
    from tests.conftest import tiny_recipe

    src = _codecontests(tmp_path / "cc.jsonl")
    r = tiny_recipe(**{"problems.source": str(src), "problems.task": "null", "problems.fields.id": "name",
                       "problems.fields.problem": "description", "problems.fields.tests": "private_tests",
                       "sampling.n": 16, "sampling.max_tokens": 6})
    store_dir = tmp_path / "store"
    s = generate(r, store_dir, teacher=teacher, progress=False)
    assert s.generated == 48
    side = [json.loads(x) for f in (store_dir / "problems").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(x["problem_id"] for x in side) == ["cc-0", "cc-1", "cc-2"]  # once per problem
    raw = [json.loads(x) for f in (store_dir / "data").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(raw) == 48 and all("tests" not in x["meta"] and x["meta"]["tests_ref"] for x in raw)
    tests_bytes = sum(len(json.dumps(x["tests"])) for x in side)
    data_bytes = sum(f.stat().st_size for f in (store_dir / "data").glob("*.jsonl"))
    assert data_bytes < 3 * tests_bytes  # 16 copies of each problem's tests would be 16x
    # read back: every sample has its problem's tests again, as the problem file gave them
    got = {x["problem_id"]: x["meta"] for x in SampleStore(store_dir).iter_samples()}
    assert len(got["cc-1"]["tests"]) == 40 and got["cc-1"]["tests"][3] == {"input": "3 1\n" + "7 " * 200 + "\n",
                                                                           "output": "5\n"}
    # a second run adds samples and no second copy of the tests
    generate(tiny_recipe(**{"problems.source": str(src), "problems.task": "null", "problems.fields.id": "name",
                            "problems.fields.problem": "description", "problems.fields.tests": "private_tests",
                            "sampling.n": 18, "sampling.max_tokens": 6}), store_dir, teacher=teacher, progress=False)
    assert sum(len(f.read_text().splitlines()) for f in (store_dir / "problems").glob("*.jsonl")) == 3

    # the filter runs the tests (the tiny model's 6 tokens fail them) and writes them once too
    cfg = FilterConfig(workers=2)
    rep = filter_samples(store_dir, tmp_path / "f", cfg, progress=False)
    assert rep["total"] == 54 and rep["code"]["problems"] == 3 and rep["code"]["by_kind"]["stdio"]["samples"] == 54
    out_side = lines(tmp_path / "f" / "problems.jsonl")
    assert sorted(x["problem_id"] for x in out_side) == ["cc-0", "cc-1", "cc-2"]
    rejected = lines(tmp_path / "f" / "rejected.jsonl")
    assert len(rejected) == 54 and all("tests" not in x["meta"] for x in rejected)
    # a filter output reads back with its problems.jsonl; without it the error names the file and the fix
    again = filter_samples(tmp_path / "f" / "rejected.jsonl", tmp_path / "f2", cfg, progress=False)
    assert counts(again)["code"] == counts(rep)["code"]
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "rejected.jsonl").write_bytes((tmp_path / "f" / "rejected.jsonl").read_bytes())
    with pytest.raises(DataError, match=r"rejected.jsonl line 1: .*tests_ref.*problems.jsonl"):
        filter_samples(lone / "rejected.jsonl", tmp_path / "f3", cfg, progress=False)

    # an older store, tests in every sample, reads and filters the same
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    write(old / "data" / "part-all.jsonl", list(SampleStore(store_dir).iter_samples()))
    rep_old = filter_samples(old, tmp_path / "f4", cfg, progress=False)
    assert counts(rep_old) == counts(rep)
    # merging stores carries the tests once
    merge([store_dir, old], tmp_path / "merged")
    merge([store_dir], tmp_path / "merged")
    assert sum(len(f.read_text().splitlines()) for f in (tmp_path / "merged" / "problems").glob("*.jsonl")) == 3
    assert len(list(SampleStore(tmp_path / "merged").iter_samples())) == 54
