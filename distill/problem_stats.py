"""Per-problem statistics of a filter run: how often the teacher solved each problem, how long its right
and wrong traces are, how much its answers agree (issue 33's first part; pass-rate selection builds on it).

One row per problem in `problem_stats.jsonl` beside kept/rejected (sorted by problem id, so the shards of
a run merge into what one run writes), a `problems` section in report.json/report.md, and a plot
(`pass_rates.png`: the pass-rate histogram, and trace length against pass rate).

Computed from the filter's state in one SQL pass over the verdicts, one problem at a time (nothing held
per sample): the pass rate is correct / judged samples, where judged leaves out samples whose correctness
was not decided (the check disabled, or `undecided`: the machine's outcome, not the answer's). Answer
agreement is the share of answered samples whose final answer has the most common text (math and choice
problems; code problems have no answer text).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

FILE = "problem_stats.jsonl"
SELECTED = "selected_problems.jsonl"
PLOT = "pass_rates.png"
BINS = 10  # the report's histogram: pass rates in tenths, with 0 and 1 counted apart too

_QUERY = ("SELECT w.pid, w.len, w.source, json_extract(v.verdict, '$.correct.pass'), "
          "json_extract(v.verdict, '$.correct.value.status'), json_extract(v.verdict, '$.correct.value.pred'), "
          "json_extract(v.verdict, '$.complete.pass'), k.ord IS NOT NULL "
          "FROM work w JOIN verdicts v ON v.key = w.key LEFT JOIN kept k ON k.ord = w.ord ORDER BY w.pid, w.ord")
# statuses that judge nothing about the answer: the machine's outcome, or no gold to judge against
UNJUDGED = {"undecided", "no_gold", "unlabeled", "judge_unparsed"}


def _row(pid: str, source: str, samples: list[tuple]) -> dict:
    judged = [(n, c) for n, c, status, *_ in samples if c is not None and status not in UNJUDGED]
    right = [n for n, c in judged if c]
    wrong = [n for n, c in judged if not c]
    preds = Counter(str(p).strip() for _, _, _, p, *_ in samples if p not in (None, ""))
    answered = sum(preds.values())
    top = preds.most_common(1)[0] if preds else None
    return {"problem_id": pid, "source": source, "samples": len(samples), "judged": len(judged),
            "correct": len(right), "wrong": len(wrong),
            "truncated": sum(1 for *_, complete, _ in samples if complete == 0),
            "kept": sum(1 for *_, kept in samples if kept),
            "pass_rate": round(len(right) / len(judged), 4) if judged else None,
            "tokens_correct": round(sum(right) / len(right)) if right else None,
            "tokens_wrong": round(sum(wrong) / len(wrong)) if wrong else None,
            "answered": answered, "majority_answer": top[0] if top else None,
            "agreement": round(top[1] / answered, 4) if top else None}


def compute(db) -> Iterator[dict]:
    """Each problem's row, in problem-id order, from the filter state's `work` and `verdicts` tables."""
    pid, source, group = None, None, []
    for p, n, src, c, status, pred, complete, kept in db.execute(_QUERY):
        if p != pid:
            if group:
                yield _row(pid, source, group)
            pid, source, group = p, src, []
        group.append((int(n or 0), None if c is None else bool(c), status, pred, complete, kept))
    if group:
        yield _row(pid, source, group)


def summary(rows: Iterable[dict]) -> dict:
    """The report's `problems` section: counts that add up across shards."""
    out = {"count": 0, "judged": 0, "unsolved": 0, "all_solved": 0, "pass_rate_sum": 0.0,
           "histogram": {f"{i / BINS:.1f}": 0 for i in range(BINS)}}
    for r in rows:
        out["count"] += 1
        rate = r["pass_rate"]
        if rate is None:
            continue
        out["judged"] += 1
        out["pass_rate_sum"] = round(out["pass_rate_sum"] + rate, 6)
        out["unsolved"] += rate == 0
        out["all_solved"] += rate == 1
        out["histogram"][f"{min(int(rate * BINS), BINS - 1) / BINS:.1f}"] += 1
    return out


def markdown(section: dict) -> list[str]:
    if not section or not section.get("count"):
        return []
    j = section["judged"]
    mean = section["pass_rate_sum"] / j if j else None
    lines = ["## Problems", "",
             f"{section['count']} problems; {j} with judged samples: mean pass rate "
             + (f"{mean:.1%}" if mean is not None else "-")
             + f", {section['unsolved']} solved by no sample, {section['all_solved']} by every sample "
             f"(per problem: `{FILE}`; plot: `{PLOT}`).", "",
             "| pass rate | " + " | ".join(f"{k}-" for k in section["histogram"]) + " |",
             "|---|" + "---|" * len(section["histogram"]),
             "| problems | " + " | ".join(str(v) for v in section["histogram"].values()) + " |", ""]
    return lines


def plot(rows: Iterable[dict], path: Path) -> None:
    """The pass-rate histogram, and mean trace length (correct, wrong) against pass rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates, lc, lw = [], [], []
    for r in rows:
        if r["pass_rate"] is None:
            continue
        rates.append(r["pass_rate"])
        lc.append((r["pass_rate"], r["tokens_correct"]))
        lw.append((r["pass_rate"], r["tokens_wrong"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.hist(rates, bins=[i / BINS for i in range(BINS + 1)], color="#4c72b0")
    a.set_xlabel("pass rate (verified correct / judged samples)")
    a.set_ylabel("problems")
    for pts, label, color in ((lc, "correct", "#55a868"), (lw, "wrong", "#c44e52")):
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            b.scatter([x for x, _ in pts], [y for _, y in pts], s=8, alpha=0.6, label=label, color=color)
    b.set_xlabel("pass rate")
    b.set_ylabel("mean tokens of the problem's traces")
    if lc or lw:
        b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def read(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# -- selection by pass rate (filter.select) ---------------------------------------------------------

def stats_path(where: str | Path) -> Path:
    """problem_stats.jsonl of another filter run: the file, or the run's output directory."""
    p = Path(where).expanduser()
    if p.is_dir():
        p = p / FILE
    if not p.is_file():
        raise FileNotFoundError(f"filter.select.pass_rates_from: {p} does not exist; point it at a `distill filter` "
                                f"output directory (it holds {FILE}) or at that file")
    return p


def select_verdict(rate: float | None, cfg, origin: str) -> dict:
    """The `select` check of a sample whose problem has pass rate `rate` (None: unrated)."""
    if not cfg.enabled:
        return {"pass": None, "value": "disabled"}
    band = [cfg.min_pass_rate, cfg.max_pass_rate]
    if rate is None:
        return {"pass": cfg.unrated == "keep", "value": {"pass_rate": None, "band": band, "from": origin}}
    return {"pass": band[0] <= rate <= band[1], "value": {"pass_rate": rate, "band": band, "from": origin}}


def rates_in_memory(samples: list[dict], verdicts: list[dict]) -> dict[str, float | None]:
    """Each problem's pass rate from in-memory verdicts (the in-memory judge), by the rule `_row` applies."""
    groups: dict[str, list] = {}
    for s, v in zip(samples, verdicts, strict=True):
        c = v["correct"]
        status = c["value"].get("status") if isinstance(c["value"], dict) else None
        groups.setdefault(s["problem_id"], []).append((c["pass"], status))
    out = {}
    for pid, g in groups.items():
        judged = [p for p, status in g if p is not None and status not in UNJUDGED]
        out[pid] = round(sum(judged) / len(judged), 4) if judged else None
    return out


def rates_from_file(path: Path) -> dict[str, float | None]:
    return {r["problem_id"]: r["pass_rate"] for r in read(path)}


def selected_row(s: dict, rate: float | None) -> dict:
    """A selected problem as `distill generate` reads a problems file (id, problem, answer, meta)."""
    meta = dict(s.get("meta") or {})
    meta["pass_rate"] = rate
    return {"id": s["problem_id"], "problem": s["problem"], "answer": s["answer"], "meta": meta}
