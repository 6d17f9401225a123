"""Problem sources: local JSONL / Parquet files, `datasets` (local directory or hub id), built-in tasks.

Every source yields `Problem(id, problem, answer, source, meta)`. Bad input fails before any
generation starts, with the file, the record and the fix in the message.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from distill.config import ProblemsConfig
from distill.problem import DataError, Problem
from distill.verify.code import CodeSpecError, code_spec

__all__ = ["DataError", "Problem", "load_problems", "parse_shard", "select_shard", "shard_of"]


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """'3/8' -> (3, 8); i counts from 0 so a Slurm array index can be passed as is."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise DataError(f"--shard {spec!r}: expected i/N, e.g. --shard 3/8 (i from 0 to N-1)") from None
    if n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {spec!r}: i must be in 0..N-1 and N >= 1")
    return i, n


def shard_of(problem_id: str, num_shards: int) -> int:
    """A problem's shard depends on its id alone, so shards stay disjoint whatever the order or limit."""
    digest = hashlib.sha256(problem_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(problems: list[Problem], shard: tuple[int, int] | None) -> list[Problem]:
    if shard is None:
        return problems
    i, n = shard
    return [p for p in problems if shard_of(p.id, n) == i]


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-empty line; malformed JSON is an error naming the line."""
    out = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(
                    f"{path} line {lineno}: not valid JSON ({e}). Each line must be one JSON object; "
                    "fix or delete that line."
                ) from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}")
            out.append((lineno, rec))
    return out


def _records(cfg: ProblemsConfig) -> tuple[str, list[tuple[str, dict]]]:
    """(default source name, [(where, record)]) from a file or a `datasets` source."""
    src = cfg.source
    assert src is not None
    path = Path(src).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return path.stem, [(f"{path} line {n}", r) for n, r in read_jsonl(path)]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                rows = pq.read_table(path).to_pylist()
            except Exception as e:  # pyarrow raises several types for a bad file
                raise DataError(f"{path}: cannot read as Parquet ({e})") from None
            return path.stem, [(f"{path} row {i}", r) for i, r in enumerate(rows)]
        if suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e})") from None
            if not isinstance(data, list):
                raise DataError(f"{path}: a .json problem file must hold a list of objects (or use .jsonl)")
            return path.stem, [(f"{path} item {i}", r) for i, r in enumerate(data)]
        raise DataError(f"{path}: unknown problem file type {suffix!r}; use .jsonl, .json or .parquet")
    from distill.benchmarks import looks_like_path

    if not path.exists() and looks_like_path(str(src)):  # a path, never a hub id: no half-minute of hub retries
        raise DataError(f"problems.source {src!r}: no such file or directory (from {Path.cwd()}); fix the path, or "
                        "give a Hugging Face dataset id (owner/name)")
    return src, _dataset_records(cfg, path)


def _dataset_records(cfg: ProblemsConfig, path: Path) -> list[tuple[str, dict]]:
    """A local `datasets` directory (save_to_disk or data files) or a hub id, via the real loader."""
    import datasets

    src = cfg.source
    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise DataError(f"{path}: no split {cfg.split!r}; it has {list(ds)}. Set problems.split.")
                ds = ds[cfg.split]
        else:
            ds = datasets.load_dataset(src, cfg.subset, split=cfg.split)
    except DataError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        hint = (
            "it is neither a file nor a directory here, so it was looked up as a Hugging Face dataset id; "
            "check the spelling, or download it on a machine with network access and point problems.source "
            "at the local copy"
            if not path.exists()
            else "check problems.split and problems.subset"
        )
        raise DataError(f"problems.source {src!r}: could not load ({type(e).__name__}: {e}); {hint}") from None
    return [(f"{src} [{cfg.split}] row {i}", r) for i, r in enumerate(ds)]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


# Fields of a code problem's record kept beside its tests in `meta` only when small: a sample carries its
# problem's meta, and CodeContests rows hold megabytes of solutions and generated tests.
META_FIELD_MAX = 2000


def _problem(where: str, rec: dict, cfg: ProblemsConfig, name: str, need_answer: bool = True) -> Problem | None:
    """One record as a Problem, None when a benchmark reader leaves it out, or a DataError that names it.
    `need_answer=False` (generation): a math record without an answer is a problem without gold ("")."""
    if cfg.format:
        from distill.benchmarks import BenchmarkError, read_row

        try:
            rec = read_row(cfg.format, rec, cfg.format_options, where)
        except BenchmarkError as e:
            raise DataError(str(e)) from None
        if rec is None:
            return None
    f = cfg.fields
    if f.tests:
        if f.tests not in rec:
            raise DataError(f"{where}: no field {f.tests!r} (problems.fields.tests); the record has {sorted(rec)}")
        rec = {k: v for k, v in rec.items() if k != f.tests} | {"tests": rec[f.tests]}
    try:
        spec = code_spec(rec)
    except CodeSpecError as e:
        raise DataError(f"{where}: a code problem whose tests cannot run: {e}. Fix the record "
                        "(the schema is in docs/code.md)") from None
    # A code problem's answer is its tests; it has no answer field to read.
    needed = (f.problem,) if spec or not need_answer else (f.problem, f.answer)
    missing = [k for k in needed + ((f.id,) if f.id else ()) if rec.get(k) in (None, "")]
    if missing:
        raise DataError(
            f"{where}: missing or empty field(s) {missing}; the record has {sorted(rec)}. Map the right "
            "fields with problems.fields.{id,problem,answer}"
            + (" (or problems.fields.id=null to derive ids from the problem text)" if f.id in missing else "")
        )
    problem = _text(rec[f.problem])
    pid = _text(rec[f.id]) if f.id else "p-" + hashlib.sha256(problem.encode()).hexdigest()[:16]
    meta = {k: v for k, v in rec.items() if k not in (f.id, f.problem, f.answer)}
    if isinstance(meta.get("meta"), dict) and len(meta) == 1:
        meta = meta["meta"]
    if spec:  # the normalised tests, plus the record's other fields that are small
        small = {k: v for k, v in meta.items()
                 if k not in ("tests", "test", "test_list", "input_output", "test_cases")
                 and len(json.dumps(v, default=str)) <= META_FIELD_MAX}
        meta = small | {k: v for k, v in spec.items() if k != "prelude"}
    answer = _text(rec[f.answer]) if rec.get(f.answer) not in (None, "") else ""
    if f.answer_pattern and not spec and (answer or need_answer):
        m = re.search(f.answer_pattern, answer, re.S)
        if not m or not m.group(1).strip():
            raise DataError(f"{where}: answer field {f.answer!r} does not match problems.fields.answer_pattern "
                            f"{f.answer_pattern!r} (answer: {answer[-200:]!r}); fix the record or the pattern")
        answer = m.group(1).strip()
    return Problem(id=pid, problem=problem, answer=answer, source=name, meta=meta)


def load_problems(cfg: ProblemsConfig, need_answer: bool = True) -> list[Problem]:
    """All problems of the recipe's source, in source order, `limit` applied (sharding comes later).

    `need_answer=False` lets math problems without a gold answer through with answer "" (what
    `distill generate` asks: the filter labels them by vote); evaluation and the GRPO reward need a gold."""
    if cfg.task is not None:
        from distill.tasks import generate_task

        try:
            problems = generate_task(cfg.task, cfg.count, cfg.seed, cfg.task_options)
        except ValueError as e:
            raise DataError(str(e)) from None
        if cfg.name:
            for p in problems:
                p.source = cfg.name
        return problems[: cfg.limit] if cfg.limit else problems

    default_name, records = _records(cfg)
    name = cfg.name or default_name
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    repeats = 0
    skipped: list[str] = []
    for where, rec in records:
        if cfg.limit and len(problems) >= cfg.limit:
            break
        if cfg.where and any(rec.get(k) != v and str(rec.get(k)) != str(v) for k, v in cfg.where.items()):
            continue
        try:
            p = _problem(where, rec, cfg, name, need_answer)
            if p is None:  # outside a benchmark's window
                continue
            if p.id in seen:
                if not cfg.fields.id:  # ids from the text: the same problem twice, kept once
                    repeats += 1
                    continue
                raise DataError(f"{where}: duplicate id {p.id!r} (first seen at {seen[p.id]}). Ids must be unique "
                                "within a source")
        except DataError as e:
            if cfg.invalid != "skip":
                raise DataError(f"{e} (or set problems.invalid=skip to leave such records out, counted)") from None
            skipped.append(str(e))
            continue
        seen[p.id] = where
        problems.append(p)
    if skipped:
        from distill.console import console

        console.print(f"[yellow]warning:[/] {cfg.source}: {len(skipped)} record(s) left out (problems.invalid=skip); "
                      f"e.g. {skipped[0]}")
    if not problems:
        raise DataError(f"problems.source {cfg.source!r}: no problems found"
                        + (f" with {cfg.where} (problems.where)" if cfg.where else ""))
    if repeats:
        from distill.console import console

        console.print(f"[yellow]warning:[/] {cfg.source}: {repeats} repeated problem text(s) kept once")
    if not need_answer and (no_gold := sum(not p.answer and not p.meta.get("kind") for p in problems)):
        from distill.console import console

        console.print(f"[yellow]note:[/] {cfg.source}: {no_gold} of {len(problems)} problem(s) have no gold answer "
                      f"(field {cfg.fields.answer!r} absent or empty); `distill filter` labels them by the majority "
                      "answer of their samples (filter.correct.vote)")
    return problems
