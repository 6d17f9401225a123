"""The per-sample checks, in pipeline order: complete, format, correct, language, readable.

`run_checks` is one pure function of (sample, config): it runs in the filter's worker processes
and, for one sample, in `--explain`. Each check returns {'pass': bool, 'value': ...}; `value`
holds what was measured, so a rejection is always explained by numbers.
"""

from __future__ import annotations

import re
import time
from typing import Any

from distill.verify.answer import check_answer, read_answer
from distill.verify.code import fenced_blocks, program_digest, unclosed_fence, verify_code, without_fences
from distill.verify.dedup import fingerprint
from distill.verify.format import find_boxed
from distill.verify.language import detect_language, language_share
from distill.verify.model_judge import RULE_DECIDED, UNDECIDED_BY_RULE
from distill.verify.readable import code_blocks, longest_paragraph, repetition
from distill.verify.response import block_problems, format_problems, read_response
from distill.verify.vote import NO_GOLD, NO_GOLD_DEFAULT, awaits_vote, has_gold

SAMPLE_CHECKS = ("complete", "format", "correct", "language", "readable")
REPETITION = "repetition"  # vLLM's finish reason for a trace its repetition detection ended
STOPPED = "stopped_for_repetition"
SET_CHECKS = ("dedup", "decontaminate", "select")
ORDER = SAMPLE_CHECKS + SET_CHECKS


def _open_braces(text: str) -> int:
    """Unescaped `{` minus `}` (LaTeX's `\\{` and `\\}` are literal braces, not groups)."""
    t = text.replace("\\{", "").replace("\\}", "")
    return t.count("{") - t.count("}")


def _last_box_unclosed(text: str) -> bool:
    starts = list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))
    if not starts:
        return False
    depth, i = 1, starts[-1].end()
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return depth > 0


def unfinished(s: dict, p) -> dict:
    """Why a sample looks cut off, with or without the teacher's `finish_reason`.

    {'problems': [...], 'how': {problem: how it was decided}}. Signs read from the text alone: a
    `\\boxed{` whose brace never closes, a final part with more `{` than `}` or an open `\\[` or
    `\\(`. Sign read from the teacher's other traces: `s['_teacher_closes']` (set by the filter) says
    that most traces of this sample's teacher close their reasoning tag, so a trace without it was
    cut before it got there, whatever shape it otherwise looks like.
    """
    problems, how = [], {}
    if s.get("finish_reason") == "length":
        problems.append("truncated")
        how["truncated"] = "finish_reason is 'length' (the teacher hit max_tokens)"
    if s.get("finish_reason") == REPETITION:
        problems.append(STOPPED)
        how[STOPPED] = "finish_reason is 'repetition': the engine ended a loop (sampling.repetition_detection)"
    text = s["completion"]
    if _last_box_unclosed(text):
        problems.append("unclosed_boxed")
        how["unclosed_boxed"] = "the text ends inside a \\boxed{ that never closes"
    final = p.final or ""
    if "```" in final or "~~~" in final:  # most final parts hold no code: skip both scans
        if unclosed_fence(final):
            problems.append("unclosed_code_block")
            how["unclosed_code_block"] = "the final part opens a ``` code block that never closes"
        # Braces inside code blocks are the code's (a dict, a format string), not the answer's.
        final = without_fences(final)
    # A plain trace's final part is the whole text, where a stray brace in the working says nothing.
    if final and p.shape != "plain" and "unclosed_boxed" not in problems and "unclosed_code_block" not in problems:
        if _open_braces(final) > 0:
            problems.append("unbalanced_final")
            how["unbalanced_final"] = f"the final part opens {_open_braces(final)} more '{{' than it closes"
        elif final.count("\\[") > final.count("\\]") or final.count("\\(") > final.count("\\)"):
            problems.append("unbalanced_final")
            how["unbalanced_final"] = "the final part opens a \\[ or \\( display that never closes"
    tc = s.get("_teacher_closes")
    if tc and tc["tag"] not in text:
        problems.append("missing_close_tag")
        how["missing_close_tag"] = (f"{tc['closed']} of {tc['of']} traces of teacher {tc['teacher']!r} close "
                                    f"{tc['tag']}; this one does not")
    return {"problems": problems, "how": how}


def check_complete(s: dict, p, cut: dict | None = None) -> dict:
    cut = cut if cut is not None else unfinished(s, p)
    problems = list(cut["problems"])
    if "missing_close_tag" in problems:
        problems.remove("missing_close_tag")
        if "unclosed_reasoning" not in problems:
            problems.append("unclosed_reasoning")
    problems += block_problems(p)
    if not (p.final or "").strip():
        problems.append("no_final_answer")
    problems = list(dict.fromkeys(problems))
    return {"pass": not problems, "value": {"problems": problems, "shape": p.shape, "how": cut["how"],
                                            "reasoning_chars": len(p.reasoning or ""),
                                            "final_chars": len(p.final or "")}}


def check_format(s: dict, p, cfg: dict) -> dict:
    """The format rule of distill/verify/response.py (the one eval and the GRPO reward use), with the
    recipe's allowed shapes: a `plain` trace, where allowed, is not asked for a reasoning block."""
    problems = []
    if p.shape not in cfg["allowed_shapes"]:
        problems.append(f"shape_{p.shape}_not_allowed")
    code = bool(s.get("_code"))
    rule = format_problems(p, code, cfg["require_boxed"])
    problems += [x for x in rule if not (p.shape == "plain" and x == "no_reasoning_block")]
    value = {"problems": problems, "shape": p.shape, "boxed": bool(find_boxed(p.final or ""))}
    if code:
        value["code_blocks"] = len(fenced_blocks(p.final or ""))
    return {"pass": not problems, "value": value}


def check_correct(s: dict, p, cfg: dict, cut: dict | None = None) -> dict:
    # One verdict with `complete`: a cut sample has no final answer, whatever its cut text boxed
    # (the R1 report's protocol counts a response cut at the length limit as wrong), so the filter
    # and `distill eval` agree on it.
    cut = cut if cut is not None else unfinished(s, p)
    if cut["problems"]:
        return {"pass": False, "value": {"status": "unfinished", "why": cut["problems"], "gold": s["answer"],
                                         "pred": None}}
    if s.get("_code"):  # a code problem: its tests, run in the sandbox, are the gold
        r = verify_code(s["_code"], p.program, cfg["code"])
        return {"pass": r["status"] == "passed", "value": {**r, "tier": "gold"}}
    # math-verify's own limit at about half the hard one: most slow expressions end gracefully,
    # and the pool's kill is left for hangs that signals cannot interrupt.
    timeout = max(1, int(cfg["timeout"] / 2))
    if not has_gold(s["answer"], (cfg.get("vote") or {}).get("no_gold", NO_GOLD_DEFAULT)):
        # No gold: the answer read here is voted on with the problem's other samples (distill/verify/vote.py,
        # a set-level pass); until then the sample is not correct.
        return {"pass": False, "value": {"status": NO_GOLD, "gold": None, "pred": read_answer(p.final, timeout),
                                         "tier": "vote"}}
    r = check_answer(str(s["answer"]), p.final, s.get("meta") or {}, timeout=timeout)
    return {"pass": r["status"] == "correct", "value": {**r, "tier": "gold"}}


def check_language(s: dict, p, cfg: dict) -> dict:
    target = cfg["language"] or detect_language(s["problem"])
    text = p.reasoning or ""
    if s.get("_code"):  # code is in no natural language: judge the prose around it
        text = without_fences(text, " ")
    r = language_share(text, target)
    return {"pass": r["share"] >= cfg["min_share"], "value": {"target": target, **r}}


def check_readable(s: dict, p, cfg: dict) -> dict:
    text = p.reasoning or ""
    rep = repetition(text, cfg["ngram"])
    tokens = s.get("completion_tokens")
    if tokens is None:
        tokens = max(1, len(s["completion"]) // 4)  # no count from the teacher: about 4 characters a token
    value = {"longest_paragraph": longest_paragraph(text), "code_blocks": code_blocks(text), **rep,
             "completion_tokens": tokens}
    problems = []
    if value["longest_paragraph"] > cfg["max_paragraph_chars"]:
        problems.append("long_paragraph")
    if value["code_blocks"] and not cfg["allow_code_blocks"] and not s.get("_code"):
        problems.append("code_block")
    if rep["repeated_share"] > cfg["max_repeated_share"]:
        problems.append("repeated_ngrams")
    if rep["longest_repeat_run"] > cfg["max_repeat_run"]:
        problems.append("repetition_loop")
    if tokens < cfg["min_tokens"] or (cfg["max_tokens"] and tokens > cfg["max_tokens"]):
        problems.append("length_out_of_bounds")
    value["problems"] = problems
    return {"pass": not problems, "value": value}


def may_pass_later(check: dict, cfg: dict) -> bool:
    """A `correct` verdict that a set-level tier may still turn: the vote, or the judge tier when enabled."""
    if awaits_vote(check):
        return True
    j = (cfg["correct"].get("judge") or {})
    if not j.get("enabled") or not isinstance(check.get("value"), dict):
        return False
    status = check["value"].get("status")
    return status in UNDECIDED_BY_RULE or (j.get("when") == "always" and status in RULE_DECIDED)


def run_checks(item: tuple[dict, dict, str | None]) -> dict:
    """(sample, filter config as a dict, forced correct status or None) -> {check: verdict, '_seconds': {...}}."""
    s, cfg, forced = item
    out: dict[str, Any] = {}
    secs: dict[str, float] = {}
    t = time.perf_counter()
    fmt = cfg["format"]
    spec = s.get("_code")
    p = read_response(s["completion"], s.get("prompt_template"), fmt["shape"], spec)
    tc = s.get("_teacher_closes")
    if tc and p.shape == "plain" and tc["tag"] not in s["completion"]:
        # Read as the teacher's shape: a block opened (in the prompt) that never closed.
        p = read_response(s["completion"], s.get("prompt_template"), tc["shape"], spec)
    cut = unfinished(s, p)
    secs["parse"] = time.perf_counter() - t
    stopped = STOPPED in cut["problems"]  # the engine ended a loop: rejected as such, nothing else is asked
    for name in SAMPLE_CHECKS:
        if not cfg[name]["enabled"]:
            out[name] = {"pass": None, "value": "disabled"}
            continue
        if stopped and name != "complete" and cfg["complete"]["enabled"]:
            out[name] = {"pass": None, "value": "not checked: the engine stopped this trace for repetition"}
            continue
        t = time.perf_counter()
        if name == "complete":
            out[name] = check_complete(s, p, cut)
        elif name == "format":
            out[name] = check_format(s, p, fmt)
        elif name == "correct":
            if forced:  # the pool could not decide it (distill/verify/pool.py): not the answer's outcome
                why = forced.removeprefix("undecided: ")
                out[name] = {"pass": False, "value": {"status": "undecided", "why": why, "gold": s["answer"], "pred": None}}
            else:
                out[name] = check_correct(s, p, cfg["correct"], cut)
        elif name == "language":
            out[name] = check_language(s, p, cfg["language"])
        else:
            out[name] = check_readable(s, p, cfg["readable"])
        secs[name] = time.perf_counter() - t
    # (a sample that its problem's vote or the judge tier may still pass: its signature is taken too)
    if cfg["dedup"]["enabled"] and all(out[c]["pass"] is not False or (c == "correct" and may_pass_later(out[c], cfg))
                                       for c in SAMPLE_CHECKS):
        t = time.perf_counter()
        d = cfg["dedup"]
        out["_fingerprint"] = fingerprint(s["completion"], d["shingle"], d["num_perm"])  # in the worker: parallel
        secs["dedup"] = time.perf_counter() - t
    # Only the shape goes back to the parent: shipping a 20,000-character reasoning back through
    # the pool's pipe for every sample costs more than parsing it again for the few that are exported.
    out["_parsed"] = {"shape": p.shape, "closed": p.closed}
    if p.code is not None:  # the export checks that it writes this program, byte for byte
        out["_parsed"]["program_sha256"] = program_digest(p.code)
    out["_seconds"] = secs
    return out
