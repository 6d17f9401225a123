"""Problems without a gold answer: labeled by the majority answer of their samples (distill/verify/vote.py),
with answers grouped by the verifier's equivalence; gold answers the samples contradict are flagged."""

from __future__ import annotations

import json

import pytest

from distill.config import FilterConfig, ProblemsConfig
from distill.data import DataError, load_problems
from distill.filter import filter_samples, merge_filtered
from distill.verify import vote
from distill.verify.answer import read_answer, same_answer
from distill.verify.batch import judge
from tests.test_filter import write


def trace(answer: str, words: str = "We work it out step by step and check the result twice") -> str:
    return f"<think>\n{words}.\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


def sample(pid, i, answer, gold=None, **kw):
    r = {"problem_id": pid, "sample_index": i, "problem": f"Problem {pid}: compute the value asked for.",
         "completion": trace(answer, f"Attempt {i} of problem {pid}: we work it out step by step and check it"),
         "finish_reason": "stop", "completion_tokens": 40}
    if gold is not None:
        r["answer"] = gold
    r.update(kw)
    return r


def cfg(**vote_kw) -> FilterConfig:
    return FilterConfig.model_validate({"workers": 0, "language": {"enabled": False},
                                        "correct": {"vote": vote_kw}})


def test_answers_group_by_the_verifiers_equivalence_not_their_text():
    assert read_answer("so $\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"
    assert read_answer("The answer is 12.") == "12"
    assert read_answer("no number here") is None
    assert same_answer("\\frac{1}{2}", "0.5") and same_answer("1/2", "\\frac12") and not same_answer("1/2", "2")
    gs = vote.groups(["\\frac{1}{2}", "0.5", "3", None, "1/2", "0.5"])
    assert [sorted(g["members"]) for g in gs] == [[0, 1, 4, 5], [2]]
    assert gs[0]["answer"] == "0.5"  # the text most of the group wrote


@pytest.mark.parametrize("preds,share,count,label,why", [
    (["4", "4", "4", "5"], 0.5, 3, "4", None),
    (["4", "4", "5", "5"], 0.5, 2, None, "a tie"),
    (["4", "4", "5", "6"], 0.5, 3, None, "fewer than min_count 3"),
    (["4", "4", "4", "5", "6", "7", "8"], 0.5, 3, None, "under min_share 50%"),
    ([None, None, "4", "4", "4"], 0.5, 3, "4", None),  # samples with no readable answer do not vote
    ([None, None], 0.5, 1, None, "no sample gives a readable answer"),
])
def test_majority_thresholds(preds, share, count, label, why):
    r = vote.majority(preds, share, count)
    assert r["label"] == label
    if why:
        assert why in r["why"]


def test_problems_without_gold_are_labeled_by_vote_through_the_filter(tmp_path):
    """p1: 3 of 4 agree (one written differently) -> labeled, the fourth wrong; p2: no majority -> unlabeled;
    p3: NuminaMath's `proof` sentinel is no gold; p4: a gold every sample contradicts -> flagged; p5: a cut
    sample does not vote. Verdicts say which tier decided; kept samples carry the label as their answer."""
    rows = [sample("p1", 0, "\\frac{1}{2}"), sample("p1", 1, "0.5"), sample("p1", 2, "1/2"), sample("p1", 3, "3"),
            sample("p2", 0, "1"), sample("p2", 1, "2"), sample("p2", 2, "3"), sample("p2", 3, "4"),
            sample("p3", 0, "9", gold="proof"), sample("p3", 1, "9", gold="proof"), sample("p3", 2, "9", gold="proof"),
            sample("p4", 0, "7", gold="5"), sample("p4", 1, "7", gold="5"), sample("p4", 2, "7", gold="5"),
            sample("p4", 3, "7", gold="5"),
            sample("p5", 0, "8", gold=""), sample("p5", 1, "8", gold=""), sample("p5", 2, "8", gold=""),
            sample("p5", 3, "8", finish_reason="length")]
    inp = write(tmp_path, rows)
    report = filter_samples(inp, tmp_path / "out", cfg(), progress=False)
    kept = [json.loads(x) for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    rej = {(r["problem_id"], r["sample_index"]): r for r in map(json.loads, (tmp_path / "out" / "rejected.jsonl")
                                                                .read_text().splitlines())}
    assert sorted((k["problem_id"], k["sample_index"]) for k in kept) == [
        ("p1", 0), ("p1", 1), ("p1", 2), ("p3", 0), ("p3", 1), ("p3", 2), ("p5", 0), ("p5", 1), ("p5", 2)]
    k = next(k for k in kept if k["problem_id"] == "p1")
    assert k["answer"] == "0.5" and k["answer_tier"] == "vote"  # each text once: the shortest
    c = k["verdicts"]["correct"]
    assert c["pass"] and c["value"]["tier"] == "vote" and c["value"]["votes"] == 3 and c["value"]["answered"] == 4
    assert rej[("p1", 3)]["verdicts"]["correct"]["value"]["status"] == "wrong"
    assert rej[("p2", 0)]["verdicts"]["correct"]["value"]["status"] == "unlabeled"
    assert "a tie" in rej[("p2", 0)]["verdicts"]["correct"]["value"]["why"]
    assert rej[("p5", 3)]["verdicts"]["correct"]["value"]["status"] == "unfinished"
    assert report["vote"] == {"problems": 4, "labeled": 3, "unlabeled": 1, "samples": 14}
    assert report["tiers"] == {"gold": {"wrong": 4}, "vote": {"correct": 9, "wrong": 1}}
    assert report["gold_contradicted"]["count"] == 1
    e = report["gold_contradicted"]["examples"][0]
    assert (e["problem_id"], e["gold"], e["answer"], e["votes"], e["answered"]) == ("p4", "5", "7", 4, 4)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "1 gold answer(s) contradicted" in md and "**1 unlabeled**" in md and "vote 9 correct" in md
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert {t["answer"] for t in train if t["problem_id"] == "p3"} == {"9"}

    # the in-memory path (`--explain`, verify.batch.judge) decides the same
    from distill.filter import read_samples

    samples, _ = read_samples(inp)
    verdicts, _ = judge(samples, cfg(), progress=False)
    by_key = {r["key"]: r for r in [*kept, *rej.values()]}
    for s, v in zip(samples, verdicts, strict=True):
        assert v["kept"] == by_key[s["key"]]["kept"], s["key"]
        assert v["correct"] == by_key[s["key"]]["verdicts"]["correct"], s["key"]

    # a rerun votes from the saved answers: same outputs, nothing judged again
    again = filter_samples(inp, tmp_path / "out", cfg(), progress=False)
    assert again["verdicts_judged"] == 0 and again["kept"] == report["kept"] and again["vote"] == report["vote"]
    # stricter thresholds: p1 (3 votes) and p3 (3 votes) unlabeled, reusing every per-sample verdict
    strict = filter_samples(inp, tmp_path / "out", cfg(min_count=4), progress=False)
    assert strict["verdicts_judged"] == 0 and strict["vote"]["labeled"] == 0
    # the vote off: such samples are rejected as no_gold
    off = filter_samples(inp, tmp_path / "off", cfg(enabled=False), progress=False)
    assert off["details"]["correct"]["no_gold"] == 14 and off["kept"] == 0

    # shards merge into what one run writes
    for i in range(2):
        filter_samples(inp, tmp_path / f"s{i}", cfg(), progress=False, shard=(i, 2))
    merged = merge_filtered([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all", progress=False)
    for k in ("kept", "tiers", "vote", "gold_contradicted"):
        assert merged[k] == report[k], k


def test_generation_takes_problems_without_gold_and_evaluation_refuses_them(tmp_path):
    src = write(tmp_path, [{"id": "a", "problem": "Prove that 2 is prime."}, {"id": "b", "problem": "1+1?",
                                                                                 "answer": "2"}])
    pc = ProblemsConfig(source=str(src))
    with pytest.raises(DataError, match="missing or empty field"):
        load_problems(pc)
    probs = load_problems(pc, need_answer=False)
    assert [(p.id, p.answer) for p in probs] == [("a", ""), ("b", "2")]
