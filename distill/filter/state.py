"""The filter's on-disk state (`OUT/.filter-state.sqlite`): saved verdicts keyed by sample and digest of
the per-sample settings (reused by a rerun), this run's per-sample tables, and what digests them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from pathlib import Path

from distill.data import DataError

STATE = ".filter-state.sqlite"
# /2: verdicts of the one reading (distill/verify/response.py) and the judge that takes nothing from the
# answer; verdicts saved by /1 are judged again.
STATE_FORMAT = "distill-filter-state/2"

UNDECIDED = "undecided"  # the digest column of a verdict the machine could not decide: never reused

def _sample_cfg(cfg_d: dict) -> dict:
    """The settings a per-sample verdict depends on (a rerun with other dedup thresholds or
    decontamination benchmarks reuses every verdict)."""
    d = {k: v for k, v in cfg_d.items() if k not in ("workers", "decontaminate", "select")}
    d["dedup"] = {k: v for k, v in cfg_d["dedup"].items() if k not in ("near_threshold", "max_per_problem", "cap_rule")}
    # the vote's thresholds decide a problem, not a sample: only what marks a gold as absent is the sample's
    # (and of the judge tier, whether it may decide the sample: its signature is then taken for dedup)
    j = cfg_d["correct"]["judge"]
    d["correct"] = {**cfg_d["correct"], "vote": {"no_gold": sorted(cfg_d["correct"]["vote"]["no_gold"])},
                    "judge": {"enabled": j["enabled"], "when": j["when"]} if j["enabled"] else {}}
    return d


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _check_shard(shard):
    if shard is not None and not (isinstance(shard, tuple) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise DataError(f"shard {shard!r}: expected (i, N) with 0 <= i < N (the CLI takes --shard i/N)")


class _State:
    """The filter's on-disk state: verdicts that survive a crash, and this run's per-sample tables."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-16000")  # 16 MB of pages, whatever the input's size
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT)")
        fmt = self.db.execute("SELECT v FROM meta WHERE k='format'").fetchone()
        if fmt is None or fmt[0] != STATE_FORMAT:
            self.db.execute("DROP TABLE IF EXISTS verdicts")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (STATE_FORMAT,))
        self.db.execute("CREATE TABLE IF NOT EXISTS verdicts(key TEXT PRIMARY KEY, h TEXT, passed INT, status TEXT, "
                        "verdict TEXT, secs TEXT, exact TEXT, sig BLOB)")
        # This run's tables: on disk (temp_store=FILE), gone when the connection closes.
        self.db.execute("CREATE TEMP TABLE seen(key TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("CREATE TEMP TABLE work(ord INTEGER PRIMARY KEY, key TEXT, pid TEXT, sidx, source TEXT, "
                        "answer TEXT, code INT, len INT, gold INT)")  # gold: verify.vote.has_gold, the one rule
        self.db.execute("CREATE TEMP TABLE specs(pid TEXT PRIMARY KEY, spec TEXT)")
        self.db.execute("CREATE TEMP TABLE dedup(ord INTEGER PRIMARY KEY, v TEXT)")
        self.db.execute("CREATE TEMP TABLE rates(pid TEXT PRIMARY KEY, rate REAL)")  # filter.select's pass rates
        self.db.execute("CREATE TEMP TABLE selected(pid TEXT PRIMARY KEY, row TEXT)")
        self.db.execute("CREATE TEMP TABLE kept(ord INTEGER PRIMARY KEY)")  # this run's kept samples
        # export.pairs: the candidates for preference pairs, one problem's rows together
        self.db.execute("CREATE TEMP TABLE pairing(pid TEXT, role TEXT, sidx, ord INT, rec TEXT)")
        self.db.commit()
        self._specs: OrderedDict[str, dict] = OrderedDict()
        self.started = False  # set once the first verdict may be saved

    def spec(self, pid: str) -> dict:
        if pid in self._specs:
            self._specs.move_to_end(pid)
            return self._specs[pid]
        spec = json.loads(self.db.execute("SELECT spec FROM specs WHERE pid=?", (pid,)).fetchone()[0])
        self._specs[pid] = spec
        if len(self._specs) > 32:
            self._specs.popitem(last=False)
        return spec

    def close(self) -> None:
        self.db.commit()
        self.db.close()
