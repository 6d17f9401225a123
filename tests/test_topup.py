"""`distill topup`: rounds of generate + filter until each problem has k samples that count or the most
samples per problem exist; resumable, and a rerun generates nothing."""

from __future__ import annotations

import json

from distill.store import SampleStore
from distill.topup import FILE, present_counts, topup
from tests.conftest import tiny_recipe


def _recipe(**over):
    sets = {"problems.count": 4, "sampling.n": 2, "sampling.max_tokens": 24, "sampling.temperature": 0.6,
            "filter.format.require_boxed": "false", "filter.language.language": "en", "filter.workers": 0,
            "topup.k": 2, "topup.max_samples": 6, "topup.step": 2, "topup.count": "correct"}
    sets.update(over)
    return tiny_recipe(**sets)


def test_topup_reaches_k_or_stops_at_the_most_and_a_rerun_generates_nothing(tmp_path, teacher):
    r = _recipe()
    store, filtered = tmp_path / "s", tmp_path / "f"
    res = topup(r, store, filtered, progress=False, teacher=teacher)
    stats = {x["problem_id"]: x for x in map(json.loads, (filtered / "problem_stats.jsonl").read_text().splitlines())}
    per = {}
    for s in SampleStore(store).iter_samples():
        per[s["problem_id"]] = per.get(s["problem_id"], 0) + 1
    assert set(per) == set(stats) and len(per) == 4
    for pid, n in per.items():
        # every problem: k correct, or the most samples; never more than the most; steps of 2 from 2
        assert stats[pid]["correct"] >= 2 or n == 6, (pid, stats[pid], n)
        assert n <= 6 and n % 2 == 0
    assert res["problems"] == 4 and res["reached_k"] + res["at_most"] == 4
    assert res["samples"] == sum(per.values()) and res["generated"] == sum(per.values())
    # the 135M teacher solves few at 24 tokens: round 1 leaves problems short, so later rounds top them up
    assert len(res["rounds"]) >= 2 and res["rounds"][1]["generated"] > 0
    assert res["rounds"][0]["generated"] == 8 and sum(x["generated"] for x in res["rounds"]) == res["generated"]
    assert json.loads((filtered / FILE).read_text())["rounds"] == res["rounds"]
    assert present_counts(r, store) == per  # what a resumed run asks for
    again = topup(r, store, filtered, progress=False, teacher=teacher)
    assert again["generated"] == 0 and len(again["rounds"]) == 1
    assert json.loads((filtered / FILE).read_text())["earlier_runs"][0]["generated"] == res["generated"]
    assert (again["reached_k"], again["at_most"]) == (res["reached_k"], res["at_most"])
