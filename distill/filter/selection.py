"""Selection by pass rate (`filter.select`): each problem's rate from this run's verdicts or from another
run's problem_stats.jsonl, loaded into the state's `rates` table."""

from __future__ import annotations

from distill import problem_stats
from distill.config import FilterConfig
from distill.data import DataError


def _load_rates(db, cfg: FilterConfig) -> str:
    """Fill the `rates` table for filter.select; where the rates came from."""
    db.execute("DELETE FROM rates")
    db.execute("DELETE FROM selected")
    db.execute("DELETE FROM pairing")
    if not cfg.select.enabled:
        return ""
    if cfg.select.pass_rates_from:
        try:
            path = problem_stats.stats_path(cfg.select.pass_rates_from)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        rows, origin = ((r["problem_id"], r["pass_rate"]) for r in problem_stats.read(path)), str(path)
    else:
        rows, origin = ((r["problem_id"], r["pass_rate"]) for r in problem_stats.compute(db)), "this run"
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= 2000:
            db.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?)", batch)
            batch = []
    db.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?)", batch)
    db.commit()
    return origin
