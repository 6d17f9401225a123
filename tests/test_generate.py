"""The generate stage with the real teacher: planning, resume, top-up, shards, manifest."""

from __future__ import annotations

from collections import Counter

import pytest

from distill.generate import generate, plan
from distill.store import SampleStore, merge
from tests.conftest import tiny_recipe

FIELDS = {"key", "problem_id", "sample_index", "problem", "answer", "messages", "completion", "reasoning", "final",
          "finish_reason", "prompt_tokens", "completion_tokens", "teacher", "sampling", "created_at"}


def test_generate_resume_topup(tmp_path, teacher):
    out = tmp_path / "s"
    r = tiny_recipe()
    s1 = generate(r, out, teacher=teacher, progress=False)
    assert (s1.planned, s1.generated, s1.status) == (8, 8, "complete")
    store = SampleStore(out)
    samples = list(store.iter_samples())
    assert len(samples) == 8 and all(FIELDS <= set(x) for x in samples)
    x = samples[0]
    assert x["teacher"]["model"] == "embedded" and x["teacher"]["backend"] == "hf" and x["teacher"]["revision"]
    assert x["sampling"] == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 8, "seed": 0}
    assert x["finish_reason"] in ("stop", "length") and 0 < x["completion_tokens"] <= 8
    assert Counter(s["problem_id"] for s in samples) == Counter({p: 2 for p in {s["problem_id"] for s in samples}})

    # a rerun generates nothing
    s2 = generate(r, out, teacher=teacher, progress=False)
    assert (s2.generated, s2.present) == (0, 8)

    # top-up: n=3 adds one sample per problem, the first two are untouched
    before = {s["key"]: s["completion"] for s in samples}
    s3 = generate(tiny_recipe(**{"sampling.n": 3}), out, teacher=teacher, progress=False)
    assert (s3.planned, s3.present, s3.generated) == (12, 8, 4)
    after = {s["key"]: s["completion"] for s in store.iter_samples()}
    assert len(after) == 12 and all(after[k] == v for k, v in before.items())
    assert sorted(s["sample_index"] for s in store.iter_samples()) == [0] * 4 + [1] * 4 + [2] * 4

    m = store.read_manifest()
    assert m["recipe"]["sampling"]["n"] == 3 and m["counts"]["samples"] == 12
    assert [run["status"] for run in m["runs"]] == ["complete", "complete"] and "transformers" in m["versions"]


def test_changed_settings_make_new_keys(tmp_path, teacher):
    out = tmp_path / "s"
    generate(tiny_recipe(), out, teacher=teacher, progress=False)
    s = generate(tiny_recipe(**{"sampling.temperature": 0.9}), out, teacher=teacher, progress=False)
    assert s.present == 0 and s.generated == 8 and SampleStore(out).count()["samples"] == 16


def test_shards_then_merge_equal_the_whole(tmp_path, teacher):
    r = tiny_recipe(**{"problems.count": 6, "sampling.n": 1})
    whole = {k for k, *_ in plan(r, None)[1]}
    dirs = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        generate(r, d, shard=(i, 3), teacher=teacher, progress=False)
        dirs.append(d)
        assert (d / "data" / f"part-{i:05d}-of-00003.jsonl").exists()
    stats = merge(dirs, tmp_path / "all")
    assert SampleStore(tmp_path / "all").keys() == whole and stats["written"] == len(whole) == 6
    # an unsharded run on the merged store finds nothing left to do
    assert generate(r, tmp_path / "all", teacher=teacher, progress=False).generated == 0


def test_r1_prefill_lands_in_completion(tmp_path, teacher):
    generate(tiny_recipe(**{"prompt.template": "r1", "problems.count": 1, "sampling.n": 1}), tmp_path / "s",
             teacher=teacher, progress=False)
    (x,) = SampleStore(tmp_path / "s").iter_samples()
    assert x["completion"].startswith("<think>\n") and x["prefill"] == "<think>\n"
    assert x["reasoning"] is not None and "Please reason step by step" in x["messages"][-1]["content"]


def test_bad_problems_fail_before_writing(tmp_path, teacher):
    from distill.data import DataError

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "answer": "2"}\n')  # no problem text (an answer may be absent: vote labels)
    with pytest.raises(DataError, match="line 1"):
        generate(tiny_recipe(**{"problems.task": "null", "problems.source": str(bad)}), tmp_path / "s",
                 teacher=teacher, progress=False)
    assert not (tmp_path / "s").exists()
