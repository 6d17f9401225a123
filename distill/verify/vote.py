"""Labels for problems without a gold answer: the majority answer of the problem's samples.

NeMo-Skills labels its problems this way (majority voting over the generations), as do the recipes that
collect problems without answers. The answers (`answer.read_answer`) are grouped by the verifier's
equivalence (`answer.same_answer`: `\\frac12`, `0.5` and `1/2` are one answer), not by their text; the
largest group is the label when it holds at least `min_count` samples and `min_share` of the answered
samples, and more samples than the next group (a tie labels nothing). Below that the problem is
unlabeled and its samples are rejected with that reason: no rule can say which of them is right.

The same grouping flags gold answers that the samples overwhelmingly contradict (`contradiction`): the
gold health section of the filter's report lists them (a wrong gold collapses RL runs and trains wrong
answers as right).

Runs in the filter's worker pool, one problem per call, so a sympy hang costs one problem's vote its
hard timeout, not the run.
"""

from __future__ import annotations

from collections import Counter

from distill.verify.answer import same_answer

# gold answers that say "no gold": NuminaMath's sentinels for proofs and unknown answers
NO_GOLD_DEFAULT = ("proof", "notfound")
NO_GOLD = "no_gold"  # a sample's `correct` status until its problem's vote decides it
UNLABELED = "unlabeled"  # the vote found no majority: the sample is rejected with this status


def awaits_vote(check: dict) -> bool:
    """A `correct` verdict of a sample whose problem has no gold, before the vote."""
    return isinstance(check.get("value"), dict) and check["value"].get("status") == NO_GOLD


def has_gold(answer, no_gold=NO_GOLD_DEFAULT) -> bool:
    text = "" if answer is None else str(answer).strip()
    return bool(text) and text.lower() not in {x.lower() for x in no_gold}


def groups(preds: list[str | None], timeout: int = 5) -> list[dict]:
    """Answers grouped by equivalence, largest first (ties: the group seen first):
    [{'answer': the group's first answer, 'members': [indices into preds]}]."""
    out: list[dict] = []
    for i, p in enumerate(preds):
        if p is None or not str(p).strip():
            continue
        for g in out:
            if same_answer(g["answer"], p, timeout):
                g["members"].append(i)
                break
        else:
            out.append({"answer": str(p).strip(), "members": [i]})
    for g in out:  # the group's answer as most of its samples wrote it (`12` rather than `7 + 5`), then shortest
        texts = Counter(str(preds[i]).strip() for i in g["members"])
        g["answer"] = min(texts, key=lambda t: (-texts[t], len(t), t))
    out.sort(key=lambda g: -len(g["members"]))  # stable: the first seen wins a tie of sizes
    return out


def majority(preds: list[str | None], min_share: float, min_count: int, timeout: int = 5) -> dict:
    """{'label': answer or None, 'members': indices that agree with it, 'votes', 'answered', 'groups',
    'share', 'why' (when unlabeled)}."""
    gs = groups(preds, timeout)
    answered = sum(len(g["members"]) for g in gs)
    out = {"label": None, "members": [], "votes": 0, "answered": answered, "groups": len(gs), "share": 0.0}
    if not gs:
        return {**out, "why": "no sample gives a readable answer"}
    top = gs[0]
    votes = len(top["members"])
    share = votes / answered
    out.update(votes=votes, share=round(share, 4))
    if len(gs) > 1 and len(gs[1]["members"]) == votes:
        return {**out, "why": f"a tie: {votes} samples answer {top['answer']!r}, {votes} {gs[1]['answer']!r}"}
    if votes < min_count:
        return {**out, "why": f"the majority answer has {votes} sample(s), fewer than min_count {min_count}"}
    if share < min_share:
        return {**out, "why": f"the majority answer holds {share:.0%} of {answered} answered samples, under "
                              f"min_share {min_share:.0%}"}
    return {**out, "label": top["answer"], "members": sorted(top["members"])}


def contradiction(gold_passes: list[bool | None], preds: list[str | None], share: float, min_count: int,
                  timeout: int = 5) -> dict | None:
    """A gold answer the samples overwhelmingly contradict: the samples judged wrong agree on one other
    answer, which holds at least `share` of the answered samples (and `min_count` of them). None otherwise."""
    answered = sum(1 for p in preds if p is not None)
    wrong = [p if ok is False else None for ok, p in zip(gold_passes, preds, strict=True)]
    if not answered or sum(1 for p in wrong if p is not None) < max(min_count, share * answered):
        return None
    gs = groups(wrong, timeout)
    if not gs:
        return None
    votes = len(gs[0]["members"])
    if votes >= min_count and votes / answered >= share:
        return {"answer": gs[0]["answer"], "votes": votes, "answered": answered}
    return None


def preds_of(checks: list[dict]) -> list[str | None]:
    """The answers the voting samples gave (their `correct` verdicts, before or after a vote)."""
    return [c["value"].get("pred") for c in checks]


def run_vote(item: tuple) -> dict:
    """One problem's vote, in a pool worker: (preds, vote config as a dict, timeout) -> `majority`'s result."""
    preds, vcfg, timeout = item
    return majority(preds, vcfg["min_share"], vcfg["min_count"], timeout)


def run_contradiction(item: tuple) -> dict | None:
    """(gold passes, preds, vote config as a dict, timeout) -> `contradiction`'s result."""
    passes, preds, vcfg, timeout = item
    return contradiction(passes, preds, vcfg["contradict_share"], vcfg["min_count"], timeout)


def decided(check: dict, result: dict | None, index: int, enabled: bool = True) -> dict:
    """The `correct` verdict of the `index`-th voting sample of a problem once the vote is `result`
    (None: the vote could not run; `why` in the result then says so)."""
    v = check["value"]
    base = {"gold": None, "pred": v.get("pred"), "tier": "vote"}
    if not enabled:
        return {"pass": False, "value": {**base, "status": NO_GOLD}}
    if result is None or result.get("label") is None:
        why = (result or {}).get("why", "the vote did not run")
        return {"pass": False, "value": {**base, "status": UNLABELED, "why": why}}
    tally = {"votes": result["votes"], "answered": result["answered"]}
    if index in result["members"]:
        return {"pass": True, "value": {**base, "status": "correct", "gold": result["label"], **tally}}
    status = "wrong" if v.get("pred") is not None else "no_answer"
    return {"pass": False, "value": {**base, "status": status, "gold": result["label"], **tally}}
