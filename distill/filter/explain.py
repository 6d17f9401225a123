"""`distill filter --explain KEY`: every check's value for one sample, with its problem's samples for the
set-level checks."""

from __future__ import annotations

from pathlib import Path

from distill.config import FilterConfig
from distill.data import DataError
from distill.filter.read import iter_records
from distill.verify.batch import (
    CloseCounts,
    judge,
)

# -- one sample, explained -------------------------------------------------------------------------

def explain(inp: str | Path, key: str, cfg: FilterConfig, eval_cfg=None) -> tuple[dict, dict]:
    """(sample, verdicts) for one key; the set-level checks see that sample's whole problem. Two
    passes over the input, holding only that problem's samples."""
    counts = CloseCounts()
    seen: set[str] = set()
    target = None
    for s in iter_records(inp, skip_bad_lines=True):
        if s["key"] in seen:
            continue
        seen.add(s["key"])
        counts.add(s)
        if target is None and (s["key"] == key or s["key"].startswith(key)):
            target = s
    if target is None:
        raise DataError(f"{inp}: no sample with key {key!r}")
    group, seen = [], set()
    for s in iter_records(inp, skip_bad_lines=True):
        if s["problem_id"] == target["problem_id"] and s["key"] not in seen:
            seen.add(s["key"])
            group.append(s)
    closing = counts.result(cfg.complete.teacher_close_share, cfg.complete.teacher_close_min)
    verdicts, _ = judge(group, cfg.model_copy(update={"workers": 1}), progress=False, closing=closing,
                        eval_cfg=eval_cfg)
    return target, verdicts[[s["key"] for s in group].index(target["key"])]
