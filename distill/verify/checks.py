"""The per-sample checks, in pipeline order: complete, format, correct, language, readable.

`run_checks` is one pure function of (sample, config): it runs in the filter's worker processes
and, for one sample, in `--explain`. Each check returns {'pass': bool, 'value': ...}; `value`
holds what was measured, so a rejection is always explained by numbers.
"""

from __future__ import annotations

import time
from typing import Any

from distill.verify.answer import check_answer
from distill.verify.dedup import fingerprint
from distill.verify.format import BLOCK_SHAPES, find_boxed, parse
from distill.verify.language import detect_language, language_share
from distill.verify.readable import code_blocks, longest_paragraph, repetition

SAMPLE_CHECKS = ("complete", "format", "correct", "language", "readable")
SET_CHECKS = ("dedup", "decontaminate")
ORDER = SAMPLE_CHECKS + SET_CHECKS


def check_complete(s: dict, p) -> dict:
    problems = []
    if s.get("finish_reason") == "length":
        problems.append("truncated")
    if p.shape in BLOCK_SHAPES:
        if not p.closed:
            problems.append("unclosed_reasoning")
        elif p.blocks > 1:
            problems.append(f"{p.blocks}_reasoning_blocks")
    if not (p.reasoning or "").strip():
        problems.append("empty_reasoning")
    if not (p.final or "").strip():
        problems.append("no_final_answer")
    return {"pass": not problems, "value": {"problems": problems, "shape": p.shape,
                                            "reasoning_chars": len(p.reasoning or ""),
                                            "final_chars": len(p.final or "")}}


def check_format(s: dict, p, cfg: dict) -> dict:
    problems = []
    if p.shape not in cfg["allowed_shapes"]:
        problems.append(f"shape_{p.shape}_not_allowed")
    boxed = bool(find_boxed(p.final or ""))
    if p.shape == "r1-zero":
        if "<answer>" not in s["completion"]:
            problems.append("no_answer_tag")
    elif cfg["require_boxed"] and not boxed:
        problems.append("no_boxed_answer")
    return {"pass": not problems, "value": {"problems": problems, "shape": p.shape, "boxed": boxed}}


def check_correct(s: dict, p, cfg: dict) -> dict:
    # math-verify's own limit at about half the hard one: most slow expressions end gracefully,
    # and the pool's kill is left for hangs that signals cannot interrupt.
    r = check_answer(str(s["answer"]), p.final, s.get("meta") or {}, timeout=max(1, int(cfg["timeout"] / 2)))
    return {"pass": r["status"] == "correct", "value": r}


def check_language(s: dict, p, cfg: dict) -> dict:
    target = cfg["language"] or detect_language(s["problem"])
    r = language_share(p.reasoning or "", target)
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
    if value["code_blocks"] and not cfg["allow_code_blocks"]:
        problems.append("code_block")
    if rep["repeated_share"] > cfg["max_repeated_share"]:
        problems.append("repeated_ngrams")
    if rep["longest_repeat_run"] > cfg["max_repeat_run"]:
        problems.append("repetition_loop")
    if tokens < cfg["min_tokens"] or (cfg["max_tokens"] and tokens > cfg["max_tokens"]):
        problems.append("length_out_of_bounds")
    value["problems"] = problems
    return {"pass": not problems, "value": value}


def run_checks(item: tuple[dict, dict, str | None]) -> dict:
    """(sample, filter config as a dict, forced correct status or None) -> {check: verdict, '_seconds': {...}}."""
    s, cfg, forced = item
    out: dict[str, Any] = {}
    secs: dict[str, float] = {}
    t = time.perf_counter()
    fmt = cfg["format"]
    p = parse(s["completion"], fmt["shape"], s.get("prompt_template"))
    secs["parse"] = time.perf_counter() - t
    for name in SAMPLE_CHECKS:
        if not cfg[name]["enabled"]:
            out[name] = {"pass": None, "value": "disabled"}
            continue
        t = time.perf_counter()
        if name == "complete":
            out[name] = check_complete(s, p)
        elif name == "format":
            out[name] = check_format(s, p, fmt)
        elif name == "correct":
            if forced:
                out[name] = {"pass": False, "value": {"status": forced, "gold": s["answer"], "pred": None}}
            else:
                out[name] = check_correct(s, p, cfg["correct"])
        elif name == "language":
            out[name] = check_language(s, p, cfg["language"])
        else:
            out[name] = check_readable(s, p, cfg["readable"])
        secs[name] = time.perf_counter() - t
    if cfg["dedup"]["enabled"] and all(out[c]["pass"] is not False for c in SAMPLE_CHECKS):
        t = time.perf_counter()
        d = cfg["dedup"]
        out["_fingerprint"] = fingerprint(s["completion"], d["shingle"], d["num_perm"])  # in the worker: parallel
        secs["dedup"] = time.perf_counter() - t
    # Only the shape goes back to the parent: shipping a 20,000-character reasoning back through
    # the pool's pipe for every sample costs more than parsing it again for the few that are exported.
    out["_parsed"] = {"shape": p.shape}
    out["_seconds"] = secs
    return out
