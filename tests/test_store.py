from __future__ import annotations

import json

import pytest

from distill.store import SampleStore, StoreError, iter_jsonl_samples, merge, sample_key

SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}
PROMPT = {"template": "plain", "system": None, "instruction": None, "force_think": True}


def sample(i: int, text: str = "x") -> dict:
    return {"key": f"k{i:04d}", "problem_id": f"p{i // 2}", "sample_index": i % 2, "completion": text}


def test_key_ignores_n_and_tracks_everything_else():
    base = sample_key("p1", 0, "embedded", {**SAMPLING, "n": 4}, PROMPT)
    assert base == sample_key("p1", 0, "embedded", {**SAMPLING, "n": 8}, PROMPT)
    others = [
        sample_key("p2", 0, "embedded", SAMPLING, PROMPT),
        sample_key("p1", 1, "embedded", SAMPLING, PROMPT),
        sample_key("p1", 0, "other-model", SAMPLING, PROMPT),
        sample_key("p1", 0, "embedded", {**SAMPLING, "temperature": 1.0}, PROMPT),
        sample_key("p1", 0, "embedded", {**SAMPLING, "seed": 1}, PROMPT),
        sample_key("p1", 0, "embedded", SAMPLING, {**PROMPT, "template": "r1"}),
    ]
    assert len({base, *others}) == 7


def test_write_read_roundtrip_and_dataset_loading(tmp_path):
    import datasets

    store = SampleStore(tmp_path / "s")
    with store.writer("part-all.jsonl") as w:
        assert w.write([sample(i) for i in range(3)]) == 3
        w.write([sample(3, "ünïcode ∑")])
    got = list(store.iter_samples())
    assert [s["key"] for s in got] == ["k0000", "k0001", "k0002", "k0003"] and got[3]["completion"] == "ünïcode ∑"
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "s" / "data" / "*.jsonl"), split="train")
    assert ds.num_rows == 4 and ds[3]["completion"] == "ünïcode ∑"


def test_torn_last_line_ignored_then_cut_before_append(tmp_path, capsys):
    store = SampleStore(tmp_path / "s")
    with store.writer("part-all.jsonl") as w:
        w.write([sample(0), sample(1)])
    path = store.files()[0]
    with path.open("ab") as f:  # a kill in the middle of a write
        f.write(b'{"key": "k0002", "problem_id": "p1", "compl')
    assert store.keys() == {"k0000", "k0001"}
    assert "torn last line" in capsys.readouterr().err
    with store.writer("part-all.jsonl") as w:  # resuming cuts the torn bytes, then appends cleanly
        w.write([sample(2)])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    assert store.keys() == {"k0000", "k0001", "k0002"}


def test_valid_json_without_newline_is_not_counted(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(json.dumps(sample(0)).encode() + b"\n" + json.dumps(sample(1)).encode())
    assert [s["key"] for s in iter_jsonl_samples(p)] == ["k0000"]


def test_corruption_in_the_middle_is_an_error(tmp_path):
    store = SampleStore(tmp_path / "s")
    store.data_dir.mkdir(parents=True)
    (store.data_dir / "part-all.jsonl").write_text(json.dumps(sample(0)) + "\n{oops\n" + json.dumps(sample(1)) + "\n")
    with pytest.raises(StoreError, match=r"part-all.jsonl line 2: not valid JSON"):
        store.keys()


def test_repeated_keys_keep_first(tmp_path):
    store = SampleStore(tmp_path / "s")
    with store.writer("a.jsonl") as w:
        w.write([sample(0, "first")])
    with store.writer("b.jsonl") as w:
        w.write([sample(0, "second"), sample(1)])
    got = {s["key"]: s["completion"] for s in store.iter_samples()}
    assert got == {"k0000": "first", "k0001": "x"}


def test_one_writer_per_file(tmp_path):
    store = SampleStore(tmp_path / "s")
    with store.writer("part-all.jsonl"):
        with pytest.raises(StoreError, match="being written by another process"):
            store.writer("part-all.jsonl")
    store.writer("part-all.jsonl").close()  # free again once the first closed


def test_failed_write_leaves_whole_lines(tmp_path, monkeypatch):
    store = SampleStore(tmp_path / "s")
    w = store.writer("part-all.jsonl")
    w.write([sample(0)])
    import errno
    import os

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StoreError, match="disk full. Everything written before this batch is safe"):
        w.write([sample(1), sample(2)])
    monkeypatch.setattr(os, "fsync", real_fsync)
    w.close()
    assert store.keys() == {"k0000"}


def test_manifest_update_is_atomic_json(tmp_path):
    store = SampleStore(tmp_path / "s")
    store.update_manifest(lambda m: m["runs"].append({"a": 1}))
    store.update_manifest(lambda m: m["runs"].append({"b": 2}))
    m = store.read_manifest()
    assert m["runs"] == [{"a": 1}, {"b": 2}] and m["format"] == "distill-store/1"
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_merge_joins_and_drops_only_repeats(tmp_path):
    a, b = SampleStore(tmp_path / "a"), SampleStore(tmp_path / "b")
    with a.writer("part-00000-of-00002.jsonl") as w:
        w.write([sample(i) for i in range(0, 6)])
    with b.writer("part-00001-of-00002.jsonl") as w:
        w.write([sample(i) for i in range(4, 10)])  # k4, k5 overlap (same content)
    loose = tmp_path / "loose.jsonl"
    loose.write_text(json.dumps(sample(10)) + "\n" + json.dumps(sample(0, "different")) + "\n")
    stats = merge([tmp_path / "a", tmp_path / "b", loose], tmp_path / "m")
    merged = SampleStore(tmp_path / "m")
    assert merged.keys() == {f"k{i:04d}" for i in range(11)}
    assert stats["written"] == 11 and stats["already_present"] == 3 and stats["conflicts"] == 1
    assert merged.read_manifest()["counts"]["samples"] == 11
    again = merge([tmp_path / "a"], tmp_path / "m")  # idempotent
    assert again["written"] == 0 and merged.count()["samples"] == 11


def test_merge_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        merge([tmp_path / "missing"], tmp_path / "m")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "no key"}\n')
    with pytest.raises(StoreError, match="has no 'key'"):
        merge([bad], tmp_path / "m")


def test_a_refused_or_failed_merge_leaves_no_empty_file(tmp_path):
    from distill.store import SampleStore, StoreError, merge

    src = SampleStore(tmp_path / "a")
    w = src.writer("part-all.jsonl")
    w.write([{"key": "k1", "problem_id": "p", "sample_index": 0, "completion": "x"}])
    w.close()
    before = sorted(p.name for p in (tmp_path / "a" / "data").iterdir())
    with pytest.raises(StoreError, match="into itself"):
        merge([tmp_path / "a"], tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "data").iterdir()) == before
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem_id": "p", "completion": "no key"}) + "\n")
    with pytest.raises(StoreError, match="has no 'key'"):
        merge([bad], tmp_path / "dest")
    assert not list((tmp_path / "dest" / "data").glob("part-merged-*.jsonl"))


def test_engine_controls_enter_the_sample_key_only_when_set():
    """sampling.repetition_detection / thinking_token_budget (issue 34): unset, the keys of every store written
    before stay; set, they are new samples (a budget changes what the teacher writes)."""
    from distill.config import load_recipe
    from distill.store import sample_key

    def key(*sets):
        s = load_recipe(None, ["teacher.backend=vllm", "teacher.reasoning_end=</think>", *sets]).sampling.model_dump()
        return sample_key("p", 0, "m", s, {})

    old = {k: v for k, v in load_recipe(None, []).sampling.model_dump().items()
           if k not in ("repetition_detection", "thinking_token_budget")}
    assert key() == sample_key("p", 0, "m", old, {})
    assert len({key(), key("sampling.thinking_token_budget=64"), key("sampling.thinking_token_budget=128"),
                key("sampling.repetition_detection.min_count=4")}) == 4
