from __future__ import annotations

import json
import operator
import re

import pytest

from distill.config import ProblemsConfig
from distill.data import DataError, load_problems, parse_shard, select_shard, shard_of
from distill.tasks import countdown
from distill.tasks.expr import ExpressionError, evaluate


def cfg(**kw) -> ProblemsConfig:
    return ProblemsConfig(**kw)


def test_jsonl_shared_benchmark(shared_data):
    probs = load_problems(cfg(source=str(shared_data / "math500.jsonl")))
    assert len(probs) == 500 and len({p.id for p in probs}) == 500
    first = probs[0]
    assert first.source == "math500" and first.id.startswith("test/") and first.answer and first.problem
    assert "answer_raw" in first.meta  # unmapped fields are kept


def test_jsonl_field_mapping_and_limit(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join(json.dumps({"uid": f"u{i}", "question": f"q{i}", "sol": i}) for i in range(5)) + "\n")
    probs = load_problems(cfg(source=str(p), fields={"id": "uid", "problem": "question", "answer": "sol"}, limit=3))
    assert [(x.id, x.problem, x.answer) for x in probs] == [("u0", "q0", "0"), ("u1", "q1", "1"), ("u2", "q2", "2")]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "problem": "x", "answer": "1"}\n\n{"id": "b", "problem": "y", answer: 2}\n')
    with pytest.raises(DataError) as e:
        load_problems(cfg(source=str(p)))
    assert f"{p} line 3" in str(e.value) and "not valid JSON" in str(e.value)


def test_missing_field_names_record_and_fix(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "problem": "x", "answer": "1"}\n{"id": "b", "question": "y", "answer": "2"}\n')
    with pytest.raises(DataError) as e:
        load_problems(cfg(source=str(p)))
    msg = str(e.value)
    assert f"{p} line 2" in msg and "['problem']" in msg and "problems.fields" in msg


def test_duplicate_ids(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "problem": "x", "answer": "1"}\n{"id": "a", "problem": "y", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"line 2: duplicate id 'a' \(first seen at .* line 1\)"):
        load_problems(cfg(source=str(p)))


def test_derived_ids_are_stable_and_repeats_kept_once(tmp_path):
    p = tmp_path / "noid.jsonl"
    p.write_text('{"problem": "x", "answer": "1"}\n{"problem": "y", "answer": "2"}\n{"problem": "x", "answer": "1"}\n')
    a = load_problems(cfg(source=str(p), fields={"id": None}))
    b = load_problems(cfg(source=str(p), fields={"id": None}))
    assert [x.id for x in a] == [x.id for x in b] and len(a) == 2 and a[0].id != a[1].id


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "probs.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "problem": ["1+1", "2+2"], "answer": [2, 4]}), p)
    probs = load_problems(cfg(source=str(p)))
    assert [(x.id, x.answer, x.source) for x in probs] == [("a", "2", "probs"), ("b", "4", "probs")]


def test_parquet_missing_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a"], "problem": ["1+1"]}), p)
    with pytest.raises(DataError, match=r"bad.parquet row 0: missing or empty field\(s\) \['answer'\]"):
        load_problems(cfg(source=str(p)))


def test_local_datasets_directories(tmp_path, shared_data):
    """The real `datasets` loader on local paths: a save_to_disk dir and a dir of data files."""
    import datasets

    ds = datasets.load_dataset("json", data_files=str(shared_data / "aime24.jsonl"), split="train")
    ds.save_to_disk(str(tmp_path / "saved"))
    probs = load_problems(cfg(source=str(tmp_path / "saved")))
    assert len(probs) == 30 and probs[0].answer

    files = tmp_path / "repo" / "data"
    files.mkdir(parents=True)
    ds.to_parquet(str(files / "test-00000-of-00001.parquet"))
    probs2 = load_problems(cfg(source=str(tmp_path / "repo"), split="test"))
    assert [p.id for p in probs2] == [p.id for p in probs]


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="looked up as a Hugging Face dataset id"):
        load_problems(cfg(source="no-such-org/no-such-dataset-xyz"))


# -- built-in tasks --------------------------------------------------------------------------

_PY = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_arithmetic_answers_are_exact():
    probs = load_problems(cfg(task="arithmetic", count=50, seed=3,
                              task_options={"digits": 2, "terms": 3, "operations": ["+", "-", "*"]}))
    assert len({p.problem for p in probs}) == 50
    for p in probs:
        nums = [int(x) for x in re.findall(r"\d+", p.problem)]
        ops = re.findall(r" ([+\-*]) ", p.problem)
        assert all(10 <= n <= 99 for n in nums) and len(nums) == 3
        # independent check with Python's own precedence
        assert int(p.answer) == eval(p.meta["expression"]), p  # noqa: S307 - digits and + - * only
        assert ops and all(o in _PY for o in ops)


def test_arithmetic_default_is_one_digit_addition_and_seeded():
    a = load_problems(cfg(task="arithmetic", count=20, seed=0))
    b = load_problems(cfg(task="arithmetic", count=20, seed=0))
    c = load_problems(cfg(task="arithmetic", count=20, seed=1))
    assert [p.problem for p in a] == [p.problem for p in b] != [p.problem for p in c]
    for p in a:
        x, y = map(int, re.fullmatch(r"What is (\d) \+ (\d)\?", p.problem).groups())
        assert int(p.answer) == x + y


def test_arithmetic_division_is_exact():
    for p in load_problems(cfg(task="arithmetic", count=30, seed=0, task_options={"operations": ["/"]})):
        a, b = map(int, re.findall(r"\d+", p.problem))
        num, _, den = p.answer.partition("/")
        assert int(num) * b == a * (int(den) if den else 1)


def test_arithmetic_too_many_problems_is_an_error():
    with pytest.raises(DataError, match="only 81 distinct problems"):
        load_problems(cfg(task="arithmetic", count=100))


def test_task_options_validated():
    with pytest.raises(DataError, match="digitz.*Known options: digits"):
        load_problems(cfg(task="arithmetic", task_options={"digitz": 2}))
    with pytest.raises(DataError, match="unknown task 'algebra'"):
        load_problems(cfg(task="algebra"))


def test_countdown_reference_solutions_check():
    probs = load_problems(cfg(task="countdown", count=40, seed=0, task_options={"numbers": 4}))
    for p in probs:
        nums, target = p.meta["numbers"], p.meta["target"]
        assert 1 <= target <= 100 and str(target) in p.problem
        assert countdown.check(p.answer, nums, target), p
        assert not countdown.check(p.answer, nums, target + 1)
        assert not countdown.check(p.answer + " + 1", nums, target + 1)  # extra number used


def test_countdown_check_rejects_cheats():
    assert countdown.check("(3 + 5) * 2 = 16", [2, 3, 5], 16)
    assert not countdown.check("3 * 5 + 1", [2, 3, 5], 16)  # 1 is not given, 2 unused
    assert not countdown.check("__import__('os')", [1], 1)
    with pytest.raises(ExpressionError):
        evaluate("2 ** 100")


# -- shards ----------------------------------------------------------------------------------

def test_shards_partition_every_problem_exactly_once(shared_data):
    probs = load_problems(cfg(source=str(shared_data / "gsm8k.jsonl")))
    for n in (1, 2, 3, 8):
        parts = [select_shard(probs, (i, n)) for i in range(n)]
        ids = [p.id for part in parts for p in part]
        assert sorted(ids) == sorted(p.id for p in probs)  # covered, none twice
        if n > 1:
            assert all(len(part) > len(probs) / n / 2 for part in parts)  # roughly balanced
    # a problem's shard does not depend on what else is in the list
    assert shard_of(probs[5].id, 8) == [i for i in range(8) if probs[5] in select_shard(probs[5:6], (i, 8))][0]


def test_parse_shard():
    assert parse_shard("3/8") == (3, 8) and parse_shard(None) is None
    for bad in ("8/8", "-1/4", "a/b", "3"):
        with pytest.raises(DataError, match="--shard"):
            parse_shard(bad)
