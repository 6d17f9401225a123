"""The input: records read and validated one at a time from a sample store or any JSONL (`iter_records`),
normalised to what the checks expect (`_normalise`); malformed lines fail with the file and line, or are
skipped and counted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from distill.console import console
from distill.data import DataError
from distill.store import (
    PROBLEMS,
    TEST_FIELDS,
    SampleStore,
    SideTable,
    StoreError,
    resolve_tests,
)
from distill.verify.code import CodeSpecError, code_spec

REQUIRED = ("problem", "completion")  # `answer`: the gold, absent or "" when the problem has none


# -- input -------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _normalise(rec: dict, where: str) -> dict:
    pid = next((rec[k] for k in ("problem_id", "id", "task_id") if rec.get(k) is not None), None)
    # A code problem's gold is its tests (in the record or its meta), not an answer field. Only a record
    # without an answer is asked (the tests are validated once per problem by `code_specs`).
    if rec.get("answer") is None:
        try:
            code_spec(rec)
        except CodeSpecError as e:
            raise DataError(f"{where}: a code problem whose tests cannot run: {e}; fix the record's tests "
                            "(the schema is in docs/code.md)") from None
    # A math sample without an answer belongs to a problem without gold: labeled by vote (filter.correct.vote).
    missing = [k for k in REQUIRED if rec.get(k) is None] + ([] if pid is not None else ["problem_id (or id, task_id)"])
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a sample needs problem_id (or id, task_id), problem and "
                        f"completion, and answer when the problem has a gold (code problems: tests, docs/code.md); "
                        f"it has {sorted(rec)}")
    s = dict(rec)
    if not isinstance(s["completion"], str):
        raise DataError(f"{where}: 'completion' must be a string, got {type(s['completion']).__name__}")
    # JSON can spell lone surrogates ("\ud800") that are not Unicode; they would crash every later
    # encode, so they become U+FFFD here, once.
    for k in ("problem", "completion"):
        s[k] = _clean(str(s[k]))
    s["answer"] = _clean(str(rec["answer"])) if rec.get("answer") is not None else ""
    s["problem_id"] = _clean(str(pid))
    if "key" not in s:  # a plain export from another tool: a stable key from what identifies it
        s["key"] = hashlib.sha256(f"{pid}\x00{s.get('sample_index', '')}\x00{s['completion']}".encode()).hexdigest()[:32]
    s.setdefault("source", rec.get("source") or "unknown")
    return s




def input_files(inp: str | Path) -> tuple[list[Path], bool, SideTable]:
    """(sample files, whether `inp` is a store, the side table of code problems' tests)."""
    inp = Path(inp)
    if inp.is_dir():
        store = SampleStore(inp)
        if not store.files():
            raise DataError(f"{inp}: no samples under {inp}/data; give a sample store or a JSONL file")
        return store.files(), True, store.side_table()
    if inp.is_file():
        side = inp.parent / f"{PROBLEMS}.jsonl"  # a filter output's kept.jsonl reads with its problems.jsonl
        return [inp], False, SideTable([side] if side.is_file() and side.resolve() != inp.resolve() else [])
    raise DataError(f"{inp}: no such file or directory")


def iter_records(inp: str | Path, skip_bad_lines: bool = False, bad: list[str] | None = None,
                 sizes: list[int] | None = None) -> Iterator[dict]:
    """Every valid record of the input, normalised, in file order (repeated keys included).

    A bad line fails with its file and line, or (skip_bad_lines) is skipped and noted in `bad`; a
    store's torn last line is skipped as the store skips it. `sizes`: read each file only up to
    that many bytes (what the first pass saw, so that a generator still appending changes nothing)."""
    files, is_store, side = input_files(inp)
    for n, path in enumerate(files):
        limit = sizes[n] if sizes is not None else None
        with path.open("rb") as f:
            read = 0
            for lineno, raw in enumerate(f, 1):
                read += len(raw)
                if limit is not None and read > limit:
                    break
                if not raw.strip():
                    continue
                where = f"{path} line {lineno}"
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict):
                        raise DataError(f"{where}: expected a JSON object")
                    s = _normalise(resolve_tests(rec, side, where), where)
                except (json.JSONDecodeError, UnicodeDecodeError, DataError, StoreError) as e:
                    msg = e if isinstance(e, DataError | StoreError) else f"{where}: not valid JSON ({e})"
                    if not raw.endswith(b"\n") and is_store:  # a store's torn last line: the store ignores it too
                        if bad is not None:  # once, in the pass that collects bad lines
                            console.print(f"[yellow]warning:[/] {where}: ignoring a torn last line ({len(raw)} bytes, "
                                          "a write cut off by a kill or a full disk); `distill generate` on this "
                                          "store regenerates that sample")
                        continue
                    if not skip_bad_lines:
                        raise DataError(f"{msg}. Fix or delete the line, or pass --skip-bad-lines to skip and count it.") from None
                    if bad is not None:
                        bad.append(str(msg))
                    continue
                yield s


def read_samples(inp: str | Path, skip_bad_lines: bool = False) -> tuple[list[dict], list[str]]:
    """(samples, bad-line messages), the first record of each key, in memory: for small inputs
    (`distill eval`'s own store, `explain`'s problem); the filter itself streams."""
    bad: list[str] = []
    seen: set[str] = set()
    samples = []
    for s in iter_records(inp, skip_bad_lines, bad):
        if s["key"] not in seen:
            seen.add(s["key"])
            samples.append(s)
    return samples, bad

def _may_be_code(s: dict) -> bool:
    meta = s.get("meta") if isinstance(s.get("meta"), dict) else {}
    return any(r.get(k) not in (None, "") for r in (s, meta) for k in TEST_FIELDS + ("kind",))
