"""Set-level rules over the saved verdicts, one problem at a time: the vote for problems without a gold
answer (distill/verify/vote.py), gold answers the samples contradict, the judge tier
(distill/verify/model_judge.py), and gold health. Each updates the verdicts in place from what the
per-sample checks saved (the answers they read never change), so a rerun decides the same."""

from __future__ import annotations

import json

from distill.config import FilterConfig
from distill.console import console, progress_bar
from distill.filter.read import iter_records
from distill.filter.state import _digest
from distill.verify.batch import (
    _BROKEN_CODE,
    _GOLD_READ,
    _passed_sample_checks,
    _workers,
)
from distill.verify.pool import VerifyPool
from distill.verify.response import read_response

_UNDECIDED_STATUSES = {"undecided", "unfinished", "gold_unparseable", "problem_error", "no_gold", "unlabeled",
                       "judge_unparsed"}

def _rule(v: dict) -> dict:
    """The rules' `correct` verdict of a sample (under the judge tier's, when the judge decided it)."""
    c = v["correct"]
    return c["value"]["rule"] if isinstance(c["value"], dict) and c["value"].get("tier") == "judge" else c


def _vote_label(v: dict) -> str | None:
    c = _rule(v)["value"]
    return c.get("gold") if isinstance(c, dict) and c.get("tier") == "vote" else None


def _vote(db, cfg: FilterConfig, progress: bool) -> dict:
    """The set-level pass of distill/verify/vote.py over the filter's state, one problem at a time.

    Voting samples are those whose `correct` verdict has tier `vote` (a readable or unreadable answer of a
    complete sample; cut and undecided samples do not vote). Each problem's result is saved with a digest
    of its answers and the vote settings (`votes` table), so a rerun with the same samples votes nothing
    again; the voters' verdicts are updated in place (their answers, which the vote reads, never change).
    """
    from distill.verify import vote

    db.execute("CREATE TABLE IF NOT EXISTS votes(pid TEXT PRIMARY KEY, h TEXT, result TEXT)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS labels(pid TEXT PRIMARY KEY, result TEXT)")
    vcfg = cfg.correct.vote.model_dump()
    timeout = max(1, int(cfg.correct.timeout / 2))
    out = {"problems": 0, "labeled": 0, "unlabeled": 0, "samples": 0, "contradicted": []}
    if not cfg.correct.enabled:
        return out
    rows = db.execute("SELECT w.pid, w.key, v.verdict FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 "
                      "AND w.gold = 0 AND (json_extract(v.verdict, '$.correct.value.tier') = 'vote' OR "
                      "json_extract(v.verdict, '$.correct.value.rule.value.tier') = 'vote') "
                      "ORDER BY w.pid, w.sidx, w.ord")
    problems: dict[str, list] = {}
    for pid, key, vtext in rows:
        problems.setdefault(pid, []).append((key, json.loads(vtext)))
    todo, results = [], {}
    for pid, group in problems.items():
        preds = vote.preds_of([_rule(v) for _, v in group])
        h = _digest(preds, vcfg["min_share"], vcfg["min_count"])
        got = db.execute("SELECT h, result FROM votes WHERE pid=?", (pid,)).fetchone()
        if got and got[0] == h:
            results[pid] = json.loads(got[1])
        elif vcfg["enabled"]:
            todo.append((pid, h, preds))
    if todo:
        def fail(item, reason):
            return {"label": None, "members": [], "why": f"the vote did not finish ({reason}); a rerun votes again"}

        items = [(preds, vcfg, timeout) for _, _, preds in todo]
        with VerifyPool(_workers(cfg, False), cfg.correct.timeout) as pool, progress_bar("vote", progress) as bar:
            task = bar.add_task("vote", total=len(todo), rate="")
            for i, ((pid, h, _), r) in enumerate(zip(todo, pool.imap(
                    vote.run_vote, items, fail, lambda it: cfg.correct.timeout * (1 + len(it[0]) // 4)), strict=True)):
                results[pid] = r
                if "did not finish" not in r.get("why", ""):
                    db.execute("INSERT OR REPLACE INTO votes VALUES (?,?,?)", (pid, h, json.dumps(r)))
                bar.update(task, completed=i + 1)
    updates = []
    for pid, group in problems.items():
        r = results.get(pid)
        out["problems"] += 1
        out["samples"] += len(group)
        if vcfg["enabled"]:
            out["labeled" if r and r.get("label") is not None else "unlabeled"] += 1
            db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?)", (pid, json.dumps(r)))
        for i, (key, v) in enumerate(group):
            new = vote.decided(_rule(v), r, i, vcfg["enabled"])
            if new != _rule(v):
                if v["correct"]["value"].get("tier") == "judge":  # the judge tier decides again from this rule
                    v["correct"]["value"]["rule"] = new
                else:
                    v["correct"] = new
                updates.append((int(_passed_sample_checks(v)), new["value"]["status"],
                                json.dumps(v, ensure_ascii=False), key))
    db.executemany("UPDATE verdicts SET passed=?, status=?, verdict=? WHERE key=?", updates)
    db.commit()
    out["contradicted"] = _contradicted(db, cfg, vcfg, timeout)
    return out


def _judge_tier(db, inp, cfg: FilterConfig, skip_bad_lines, sizes, mine, progress: bool) -> dict:
    """distill/verify/model_judge.py over the samples the rules left undecided (or every math sample with a
    reference, `when: always`). Calls are saved in the state (`judge_calls`, keyed by the judge model and the
    prompt) as they return, so an interrupted run loses none and a rerun calls only what is new; a call that
    failed for good leaves its sample `undecided` (judged again by the next run)."""
    from distill.config import SamplingConfig
    from distill.verify import model_judge as mj

    jc = cfg.correct.judge
    out = {"enabled": jc.enabled, "candidates": 0, "calls": 0, "cached": 0, "screened": 0, "unparsed": 0,
           "failed": 0, "no_reference": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if not (cfg.correct.enabled and jc.enabled):
        return out
    db.execute("CREATE TABLE IF NOT EXISTS judge_calls(h TEXT PRIMARY KEY, verdict INT, output TEXT, "
               "prompt_tokens INT, completion_tokens INT)")
    statuses = mj.UNDECIDED_BY_RULE + (mj.RULE_DECIDED if jc.when == "always" else ())
    # the rule statuses that go to the judge; a sample the judge decided before is looked at again too
    cand = {o for (o,) in db.execute(
        "SELECT w.ord FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 AND (json_extract(v.verdict, "
        "'$.correct.value.tier') = 'judge' OR v.status IN (" + ",".join("?" * len(statuses)) + "))", statuses)}
    if not cand:
        return out
    from distill.models import model_identity

    ident = model_identity(jc.teacher.model, jc.teacher.revision, jc.teacher.backend)["key"]
    decisions: list[tuple[str, dict, dict, str | None, str | None]] = []  # (key, verdict, rule, reference, call h)
    requests: dict[str, object] = {}
    for ord_, s in enumerate(iter_records(inp, skip_bad_lines, None, sizes)):
        if ord_ >= len(mine) or not mine[ord_] or ord_ not in cand:
            continue
        v = json.loads(db.execute("SELECT verdict FROM verdicts WHERE key=?", (s["key"],)).fetchone()[0])
        rule = _rule(v)
        val = rule["value"] if isinstance(rule["value"], dict) else {}
        if val.get("status") not in statuses:  # the rules decide it now (a vote changed): their verdict stands
            decisions.append((s["key"], v, rule, None, None))
            continue
        out["candidates"] += 1
        reference = val.get("gold") if val.get("tier") == "vote" else s["answer"]
        if not reference:
            out["no_reference"] += 1
            decisions.append((s["key"], v, rule, None, None))
            continue
        final = read_response(s["completion"], s.get("prompt_template"), v["_parsed"]["shape"], None).final or ""
        why = mj.screen(final)
        if why:
            out["screened"] += 1
            decisions.append((s["key"], v, rule, reference, "screened: " + why))
            continue
        prompt, digest = mj.prompt(s["problem"], reference, final, jc.max_answer_chars)
        h = _digest(ident, digest, jc.max_tokens)
        if db.execute("SELECT 1 FROM judge_calls WHERE h=?", (h,)).fetchone():
            out["cached"] += 1
        elif h not in requests:
            requests[h] = prompt
        decisions.append((s["key"], v, rule, reference, h))
    if requests:
        from distill.teachers import Request, load_teacher
        from distill.teachers.base import Failure

        failed: dict[str, str] = {}
        sampling = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=jc.max_tokens)
        with console.status(f"loading the judge {jc.teacher.model} ({jc.teacher.backend})"):
            teacher = load_teacher(jc.teacher)
        try:
            with progress_bar("judge tier", progress) as bar:
                task = bar.add_task("judge tier", total=len(requests), rate="")
                done = 0
                reqs = (Request(h, p, int(h[:15], 16)) for h, p in requests.items())
                for batch in teacher.generate(reqs, sampling):
                    rows = []
                    for c in batch:
                        if isinstance(c, Failure):
                            failed[c.key] = f"{c.cause}: {c.message}"
                            continue
                        verdict = mj.parse(c.text)
                        rows.append((c.key, None if verdict is None else int(verdict), c.text[:2000],
                                     c.prompt_tokens, c.completion_tokens))
                        out["prompt_tokens"] += c.prompt_tokens
                        out["completion_tokens"] += c.completion_tokens
                    db.executemany("INSERT OR REPLACE INTO judge_calls VALUES (?,?,?,?,?)", rows)
                    db.commit()
                    done += len(batch)
                    out["calls"] += len(rows)
                    bar.update(task, completed=done)
        finally:
            teacher.close()
    else:
        failed = {}
    updates = []
    for key, v, rule, reference, h in decisions:
        if h is None:
            new = rule
        elif h.startswith("screened: "):
            new = {"pass": False, "value": {"status": "wrong", "gold": reference, "pred": rule["value"].get("pred"),
                                            "tier": "judge", "why": h.removeprefix("screened: "), "rule": rule}}
        elif h in failed:
            out["failed"] += 1
            new = {"pass": False, "value": {"status": "undecided", "why": "the judge's call failed: " + failed[h],
                                            "gold": reference, "pred": None, "tier": "judge", "rule": rule}}
        else:
            verdict, text = db.execute("SELECT verdict, output FROM judge_calls WHERE h=?", (h,)).fetchone()
            status = mj.UNPARSED if verdict is None else "correct" if verdict else "wrong"
            out["unparsed"] += verdict is None
            new = {"pass": bool(verdict), "value": {"status": status, "gold": reference,
                                                    "pred": rule["value"].get("pred"), "tier": "judge",
                                                    "judge_output": text[:200], "rule": rule}}
        if new != v["correct"]:
            v["correct"] = new
            updates.append((int(_passed_sample_checks(v)), new["value"]["status"], json.dumps(v, ensure_ascii=False),
                            key))
    db.executemany("UPDATE verdicts SET passed=?, status=?, verdict=? WHERE key=?", updates)
    db.commit()
    return out


def _contradicted(db, cfg: FilterConfig, vcfg: dict, timeout: int) -> list[dict]:
    """Gold problems whose samples judged wrong agree on one other answer (vote.contradiction)."""
    from distill.verify import vote

    cand = db.execute(
        "SELECT w.pid FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 AND w.gold = 1"
        " GROUP BY w.pid HAVING SUM(v.status IN ('correct', 'wrong')) >= ? AND SUM(v.status = 'wrong') >= "
        "? * SUM(v.status IN ('correct', 'wrong'))", [vcfg["min_count"], vcfg["contradict_share"]]).fetchall()
    if not cand:
        return []
    items, pids = [], []
    for (pid,) in cand:
        got = db.execute("SELECT v.status, json_extract(v.verdict, '$.correct.value.pred'), w.answer, w.source "
                         "FROM work w JOIN verdicts v ON v.key = w.key WHERE w.pid = ? AND v.status IN ('correct', "
                         "'wrong') ORDER BY w.sidx, w.ord", (pid,)).fetchall()
        items.append(([st == "correct" for st, *_ in got], [p for _, p, *_ in got], vcfg, timeout))
        pids.append((pid, got[0][2], got[0][3]))
    out = []
    with VerifyPool(_workers(cfg, False), cfg.correct.timeout) as pool:
        for (pid, gold, src), r in zip(pids, pool.imap(vote.run_contradiction, items, lambda *_: None,
                                                         lambda it: cfg.correct.timeout * (1 + len(it[1]) // 4)),
                                       strict=True):
            if r:
                out.append({"problem_id": pid, "source": src, "gold": gold, **r})
    return out


# `correct` statuses that say nothing about the answer: such a sample is no rejected side of a pair

def _gold_health_sql(db) -> dict:
    """`gold_health`'s rule over the on-disk tables (per problem, not per sample in memory)."""
    out: dict[str, dict] = {}
    read = ",".join(f"'{s}'" for s in sorted(_GOLD_READ))
    # A code problem's "gold" is its own code (tests' imports, prompt): broken when it does not run in the judge.
    cur = db.execute(
        "SELECT w.source, w.pid, MAX(v.status IN ('gold_unparseable', 'problem_error')), "
        "MAX(v.status IN (" + read + ")), MAX(w.ord), MAX(w.code) FROM work w JOIN verdicts v ON v.key = w.key "
        "WHERE w.code = 0 OR v.status = 'problem_error' GROUP BY w.source, w.pid ORDER BY w.source, w.pid")
    for src, pid, unparseable, was_read, last, code in cur:
        st = "unparseable" if unparseable else "read" if was_read else "unknown"
        if code:
            last = -1  # no answer text: say what is broken
        h = out.setdefault(src, {"problems": 0, "read": 0, "unparseable": 0, "unknown": 0, "examples": []})
        h["problems"] += 1
        h[st] += 1
        if st == "unparseable" and len(h["examples"]) < 5:
            h["examples"].append({"problem_id": pid, "gold": last})
    for h in out.values():  # the examples' gold answers, as written in the sample read last
        for e in h["examples"]:
            e["gold"] = (_BROKEN_CODE if e["gold"] == -1 else
                         db.execute("SELECT answer FROM work WHERE ord=?", (e["gold"],)).fetchone()[0])
    return out
