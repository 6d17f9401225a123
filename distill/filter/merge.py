"""Joining the output directories of `distill filter --shard i/N` runs into what one run writes."""

from __future__ import annotations

import heapq
import json
import os
from array import array
from collections import Counter
from pathlib import Path

from distill import problem_stats
from distill.console import progress_bar
from distill.data import DataError
from distill.filter.outputs import CONTRADICTED_EXAMPLES, PAIRS, train_schema, write_markdown
from distill.store import (
    PROBLEMS,
    now,
)
from distill.verify.batch import (
    length_of,
)

# -- merging shards ------------------------------------------------------------------------------

def _shard_dirs(dirs) -> list[Path]:
    """Output directories, with glob patterns (quoted in a Slurm script) expanded."""
    import glob

    out: list[Path] = []
    for d in map(str, dirs):
        hits = sorted(glob.glob(d)) if any(c in d for c in "*?[") else [d]
        if not hits:
            raise DataError(f"--merge {d!r}: matches no directory")
        out += [Path(h) for h in hits]
    return out


def merge_filtered(dirs, out: str | Path, progress: bool = True) -> dict:
    """Join the output directories of `distill filter --shard i/N` (i = 0..N-1) into one: kept,
    rejected, train and problems concatenated, one report whose counts are the sums (what one
    unsharded run reports). One writer per `out`, as for the filter."""
    from distill.lock import output_lock

    with output_lock(out, "distill filter --merge"):
        return _merge_filtered(dirs, out, progress)


def _merge_filtered(dirs, out: str | Path, progress: bool) -> dict:
    dirs = _shard_dirs(dirs)
    out = Path(out)
    reports = []
    for d in dirs:
        path = d / "report.json"
        if not path.is_file():
            raise DataError(f"{d}: no report.json; is it the output of a finished `distill filter --shard i/N`? "
                            "Rerun that shard to finish it")
        r = json.loads(path.read_text())
        if not r.get("shard"):
            raise DataError(f"{d}: filtered without --shard; only the shards of one input are merged")
        reports.append((d, r))
    n = {r["shard"].split("/")[1] for _, r in reports}
    if len(n) != 1:
        raise DataError(f"shards of different counts ({sorted(n)}): merge the shards of one `--shard i/N` run")
    total_shards = int(n.pop())
    got = Counter(int(r["shard"].split("/")[0]) for _, r in reports)
    missing = [i for i in range(total_shards) if i not in got]
    twice = [i for i, c in got.items() if c > 1]
    if missing or twice:
        raise DataError(f"shards to merge: {total_shards} expected; " + (
            f"missing {missing} (run `distill filter --shard {missing[0]}/{total_shards}` for each)" if missing else "")
            + ("; " if missing and twice else "") + (f"given twice: {twice}" if twice else ""))
    first = reports[0][1]
    for d, r in reports[1:]:
        for k, what in (("input_fingerprint", "inputs"), ("config", "filter settings")):
            if r[k] != first[k]:
                raise DataError(f"{d} and {reports[0][0]}: different {what}; every shard must filter the same input "
                                "with the same recipe")
        if Path(r["outputs"]["train"]).suffix != Path(first["outputs"]["train"]).suffix:
            raise DataError(f"{d}: its train file is {Path(r['outputs']['train']).name}, another shard's is "
                            f"{Path(first['outputs']['train']).name}; filter every shard with the same export.format")
    reports.sort(key=lambda x: int(x[1]["shard"].split("/")[0]))
    if any(out.resolve() == d.resolve() for d, _ in reports):
        raise DataError(f"--out {out}: one of the shards; merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"
    train_name = Path(first["outputs"]["train"]).name
    lengths = {True: array("I"), False: array("I")}
    written: list[tuple[Path, Path]] = []
    try:
        with progress_bar("merge", progress) as bar:
            task = bar.add_task("merge", total=sum(r["total"] for _, r in reports), rate="")
            for name, kept in (("kept.jsonl", True), ("rejected.jsonl", False)):
                tmp = out / f".{name}.{tag}"
                with tmp.open("wb") as f:
                    for d, _ in reports:
                        with (d / name).open("rb") as src:
                            for line in src:
                                f.write(line)
                                rec = json.loads(line)
                                lengths[kept].append(min(length_of(rec), 2**32 - 1))
                                bar.advance(task)
                    f.flush()
                    os.fsync(f.fileno())
                written.append((tmp, out / name))
        refs: set[str] = set()
        tmp = out / f".{PROBLEMS}.jsonl.{tag}"
        with tmp.open("wb") as f:
            for d, _ in reports:
                if (d / f"{PROBLEMS}.jsonl").is_file():
                    for line in (d / f"{PROBLEMS}.jsonl").open("rb"):
                        ref = json.loads(line)["ref"]
                        if ref not in refs:
                            refs.add(ref)
                            f.write(line)
        written.append((tmp, out / f"{PROBLEMS}.jsonl"))
        stats = [d / problem_stats.FILE for d, _ in reports if (d / problem_stats.FILE).is_file()]
        tmp = out / f".{problem_stats.FILE}.{tag}"
        with tmp.open("w", encoding="utf-8") as f:  # each shard's rows are in problem-id order, the shards disjoint
            for row in heapq.merge(*(problem_stats.read(p) for p in stats), key=lambda r: r["problem_id"]):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        written.append((tmp, out / problem_stats.FILE))
        problem_stats.plot(problem_stats.read(tmp), out / f"{problem_stats.PLOT}.{tag}")
        pairs = [d / PAIRS for d, _ in reports if (d / PAIRS).is_file()]
        if pairs:
            tmp = out / f".{PAIRS}.{tag}"
            with tmp.open("w", encoding="utf-8") as f:
                for row in heapq.merge(*(problem_stats.read(p) for p in pairs),
                                       key=lambda r: (r["problem_id"], r["pair_index"])):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append((tmp, out / PAIRS))
        sel = [d / problem_stats.SELECTED for d, _ in reports if (d / problem_stats.SELECTED).is_file()]
        if sel:
            tmp = out / f".{problem_stats.SELECTED}.{tag}"
            with tmp.open("w", encoding="utf-8") as f:
                for row in heapq.merge(*(problem_stats.read(p) for p in sel), key=lambda r: r["id"]):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append((tmp, out / problem_stats.SELECTED))
        written.append((out / f"{problem_stats.PLOT}.{tag}", out / problem_stats.PLOT))
        tmp = out / f".{train_name}.{tag}"
        if train_name.endswith(".jsonl"):
            with tmp.open("wb") as f:
                for d, _ in reports:
                    with (d / train_name).open("rb") as src:
                        for line in src:
                            f.write(line)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, train_schema()) as w:
                for d, _ in reports:
                    pf = pq.ParquetFile(d / train_name)
                    for i in range(pf.num_row_groups):
                        w.write_table(pf.read_row_group(i).cast(train_schema()))
        written.append((tmp, out / train_name))
        report = merge_reports([r for _, r in reports])
        report["outputs"] = {"kept": str(out / "kept.jsonl"), "rejected": str(out / "rejected.jsonl"),
                             "train": str(out / train_name), "problem_stats": str(out / problem_stats.FILE)}
        report["merged_from"] = [str(d) for d, _ in reports]
        tmp = out / f".report.json.{tag}"
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        written.append((tmp, out / "report.json"))
        write_markdown(report, lengths[True], lengths[False], out, suffix=f".{tag}")
        written += [(out / f"{n}.{tag}", out / n) for n in ("report.md", "lengths.png", "acceptance.png")]
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        for tmp in out.glob(f".*.{tag}"):
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in written:
        if final.name == f"{PROBLEMS}.jsonl" and not refs:
            tmp.unlink()
            final.unlink(missing_ok=True)
            continue
        os.replace(tmp, final)
    return report


def _add(a: dict, b: dict) -> dict:
    """Counts summed key by key (nested dicts of numbers)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            out[k] = _add(out.get(k, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = out.get(k, 0) + v
        else:
            out.setdefault(k, v)
    return out


def merge_reports(reports: list[dict]) -> dict:
    """One report from the shards' reports: what one unsharded run would count. The shards share
    the input-wide parts (bad lines, teachers' close tags) and split the problems."""
    r0 = reports[0]
    checks = {c: {"enabled": r0["checks"][c]["enabled"], **{k: sum(r["checks"][c][k] for r in reports)
                                                               for k in ("evaluated", "failed", "first_reason")},
                  "seconds": round(sum(r["checks"][c]["seconds"] for r in reports), 3)} for c in r0["order"]}
    gold: dict[str, dict] = {}
    for r in reports:
        for src, h in r["gold_health"].items():
            g = gold.setdefault(src, {"problems": 0, "read": 0, "unparseable": 0, "unknown": 0, "examples": []})
            for k in ("problems", "read", "unparseable", "unknown"):
                g[k] += h[k]
            g["examples"] += h["examples"]
    for g in gold.values():  # each shard's first five in problem order: the union's first five are the run's
        g["examples"] = sorted(g["examples"], key=lambda e: e["problem_id"])[:5]
    code = None
    codes = [r["code"] for r in reports if r.get("code")]
    if codes:
        flags = [c["sandboxed"] for c in codes if c["sandboxed"] is not None]
        code = {"problems": sum(c["problems"] for c in codes),
                "by_kind": {}, "tests": {}, "sandboxed": all(flags) if flags else None}
        for c in codes:
            code["by_kind"] = _add(code["by_kind"], c["by_kind"])
            code["tests"] = _add(code["tests"], c["tests"])
        code["by_kind"] = dict(sorted(code["by_kind"].items()))
    by_source: dict = {}
    details: dict = {}
    shapes: dict = {}
    problems: dict = {}
    selection: dict = {}
    pairs: dict = {}
    tiers: dict = {}
    votes: dict = {}
    judged: dict = {}
    contradicted = {"count": 0, "examples": []}
    for r in reports:
        tiers = _add(tiers, r.get("tiers") or {})
        votes = _add(votes, r.get("vote") or {})
        judged = _add(judged, r.get("judge_tier") or {})
        c = r.get("gold_contradicted") or {"count": 0, "examples": []}
        contradicted = {"count": contradicted["count"] + c["count"], "examples": contradicted["examples"] + c["examples"]}
        problems = _add(problems, r.get("problems") or {})
        selection = _add(selection, r.get("selection") or {})
        pairs = _add(pairs, r.get("pairs") or {})
        by_source = _add(by_source, r["by_source"])
        details = _add(details, r["details"])
        shapes = _add(shapes, r["shapes"])
    return {
        **({"code": code} if code else {}),
        "gold_health": dict(sorted(gold.items())),
        "input": r0["input"], "created_at": now(), "total": sum(r["total"] for r in reports),
        "kept": sum(r["kept"] for r in reports), "undecided": sum(r.get("undecided", 0) for r in reports),
        "bad_lines_skipped": r0["bad_lines_skipped"], "bad_lines": r0["bad_lines"], "order": r0["order"],
        "checks": checks, "details": details, "tiers": dict(sorted(tiers.items())), "vote": votes,
        "judge_tier": judged,
        "gold_contradicted": {"count": contradicted["count"], "examples": sorted(
            contradicted["examples"], key=lambda e: e["problem_id"])[:CONTRADICTED_EXAMPLES]},
        "by_source": dict(sorted(by_source.items())), "shapes": shapes,
        "problems": problems, **({"selection": selection} if selection else {}), **({"pairs": pairs} if pairs else {}),
        "seconds": {"total": round(max(r["seconds"]["total"] for r in reports), 2),
                    "parse": round(sum(r["seconds"]["parse"] for r in reports), 3),
                    "slowest_sample": max(r["seconds"]["slowest_sample"] for r in reports),
                    "shards_total": round(sum(r["seconds"]["total"] for r in reports), 2)},
        "config": r0["config"], "shard": None, "input_fingerprint": r0["input_fingerprint"],
        "input_samples": r0["input_samples"],
        "verdicts_reused": sum(r.get("verdicts_reused", 0) for r in reports),
        "verdicts_judged": sum(r.get("verdicts_judged", 0) for r in reports),
    }
