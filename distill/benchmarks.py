"""The benchmark registry: names -> problem sources, and the readers of benchmarks whose rows are not
plain {id, problem, answer}.

Used by `distill eval --benchmark NAME`, by the filter's decontamination (`filter.decontaminate.
benchmarks`) and by the problem loader (`distill.data`), so that a benchmark means the same rows in
all three. It imports only the config: evaluate -> filter -> decontaminate -> benchmarks has no cycle.

Two readers turn a hub row, as published, into a problem:

- `gpqa` (GPQA Diamond, `Idavidrein/gpqa`, subset gpqa_diamond; gated on the hub: a local copy or the
  user's token): the question with its four options in an order shuffled per problem from a seed
  (the correct one is not always A) and lettered A-D; the gold is the letter; `meta.options` lists
  the options in that order (the multiple-choice reading maps an option's text to its letter) and
  `meta.shuffle_seed` records the seed. Rows already in the form {id, problem, answer, options} are
  read as they are.
- `livecodebench` (`livecodebench/code_generation_lite`): rows as the hub has them
  (`question_content`, `starter_code`, `contest_date`, `metadata` with `func_name`,
  `public_test_cases` as a JSON string, `private_test_cases` as a JSON string or
  base64(zlib(pickle(JSON string)))). The pickle is read by an unpickler that refuses every global,
  so it can only rebuild strings, numbers and containers, never call anything. Problems outside the
  date window are left out (the default window is the R1 report's, 2024-08-01 to 2025-01-31); stdin
  problems become the `stdio` kind, functional ones the `call` kind (docs/code.md).
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import pickle
import random
import zlib
from pathlib import Path
from typing import Any

from distill.config import EvalConfig, FieldMap, ProblemsConfig

# name -> (hub dataset id, subset, split, fields). The local copies in ../shared/data/benchmarks use
# the uniform schema {id, problem, answer}; the hub copies keep their own field names.
HUB_BENCHMARKS: dict[str, tuple[str, str | None, str, FieldMap]] = {
    "math500": ("HuggingFaceH4/MATH-500", None, "test", FieldMap(id="unique_id")),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", FieldMap(id="id")),
    "aime25": ("math-ai/aime25", None, "test", FieldMap(id="id")),
    "amc23": ("math-ai/amc23", None, "test", FieldMap(id="id", problem="question")),
    "gsm8k": ("openai/gsm8k", "main", "test", FieldMap(id=None, problem="question", answer_pattern=r"####\s*(.+?)\s*$")),
    # Code (docs/code.md): the tests are the gold; pass@k counts samples whose code passes all of them.
    "humaneval": ("openai/openai_humaneval", None, "test", FieldMap(id="task_id", problem="prompt")),
    "mbpp": ("google-research-datasets/mbpp", "sanitized", "test", FieldMap(id="task_id", problem="prompt")),
    # Read by the readers below (the fields they produce).
    "gpqadiamond": ("Idavidrein/gpqa", "gpqa_diamond", "train", FieldMap()),
    "livecodebench": ("livecodebench/code_generation_lite", "release_v5", "test", FieldMap()),
}
# Benchmarks whose one local file holds every split in a `split` field (../shared/data/code/mbpp.jsonl):
# eval.split picks the evaluation set (MBPP's 257 test problems).
SPLIT_FIELD = {"mbpp"}
READERS = {"gpqadiamond": "gpqa", "livecodebench": "livecodebench"}


class BenchmarkError(ValueError):
    """A benchmark that cannot be resolved or read; the message says the fix."""


def canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def reader_options(name: str, cfg: EvalConfig) -> dict:
    if name == "gpqadiamond":
        return {"seed": cfg.gpqa_seed}
    if name == "livecodebench":
        lcb = cfg.livecodebench
        return {"version": lcb.version, "start": lcb.start, "end": lcb.end, "timeout": lcb.timeout}
    return {}


def resolve_benchmark(ref: str, cfg: EvalConfig) -> ProblemsConfig:
    """A benchmark name, a local file or directory, or a Hugging Face dataset id, as a problem source."""
    name = canonical(ref)
    fields = cfg.fields
    if name in HUB_BENCHMARKS:
        hub, subset, split, hub_fields = HUB_BENCHMARKS[name]
        if name == "livecodebench":
            subset = cfg.livecodebench.version
        local = (cfg.benchmarks.get(ref) or cfg.benchmarks.get(name)
                 or os.environ.get(f"DISTILL_BENCHMARK_{name.upper()}"))
        where = "eval.benchmarks" if (cfg.benchmarks.get(ref) or cfg.benchmarks.get(name)) else f"$DISTILL_BENCHMARK_{name.upper()}"
        if not local and os.environ.get("DISTILL_BENCHMARKS"):  # one directory, or several joined by ':'
            for d in os.environ["DISTILL_BENCHMARKS"].split(os.pathsep):
                cands = [Path(d).expanduser() / f"{n}.jsonl" for n in dict.fromkeys((name, ref.lower()))]
                hit = next((c for c in cands if d and c.is_file()), None)
                if hit is not None:
                    local, where = str(hit), "$DISTILL_BENCHMARKS"
                    break
        reader = {"format": READERS.get(name), "format_options": reader_options(name, cfg)}
        if local:
            if not Path(local).expanduser().exists():
                raise BenchmarkError(f"benchmark {ref}: {where} points at {local}, which does not exist")
            # a reader writes {id, problem, answer}: the file's own first record says nothing of the fields
            own = fields or (FieldMap() if reader["format"] else None)
            return _local_source(local, name, own, cfg).model_copy(update=reader)
        return ProblemsConfig(source=hub, subset=subset, split=split, fields=fields or hub_fields, name=name,
                              limit=cfg.limit, **reader)
    path = Path(ref).expanduser()
    if path.exists():
        return _local_source(str(path), path.stem, fields, cfg)
    if looks_like_path(ref):  # never sent to the hub: that would retry for half a minute, then say less
        raise BenchmarkError(f"--benchmark {ref!r}: no such file or directory (from {Path.cwd()}); give an existing "
                             "path, a benchmark name or a dataset id (owner/name)")
    if "/" in ref:  # a dataset id
        return ProblemsConfig(source=ref, split=cfg.split, fields=fields or FieldMap(), limit=cfg.limit)
    names = ", ".join(DISPLAY_NAMES.get(n, n) for n in HUB_BENCHMARKS)
    raise BenchmarkError(f"--benchmark {ref!r}: not a benchmark name ({names}), not a file here, and not a dataset "
                         "id (owner/name)")


# The spellings the docs use, for messages (names are compared without '-' and '_').
DISPLAY_NAMES = {"gpqadiamond": "gpqa_diamond"}
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt", ".gz")


def looks_like_path(ref: str) -> bool:
    """A reference that is a path, not a hub dataset id (`owner/name`, one slash, no file suffix)."""
    return (ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.lower().endswith(_FILE_SUFFIXES)
            or os.sep != "/" and os.sep in ref)


def _local_source(path: str, name: str, fields: FieldMap | None, cfg: EvalConfig) -> ProblemsConfig:
    p = Path(path)
    rec: dict = {}
    if p.is_file() and p.suffix == ".jsonl":
        with p.open() as f:
            first = next((line for line in f if line.strip()), "")
        try:
            rec = json.loads(first) if first else {}
        except json.JSONDecodeError:
            rec = {}  # load_problems names the line
        rec = rec if isinstance(rec, dict) else {}
    if fields is None:
        fields = FieldMap()
        if rec and "id" not in rec:  # any JSONL with problem and answer; ids are optional
            fields = FieldMap(id=None)
    where = {"split": cfg.split} if name in SPLIT_FIELD and "split" in rec else {}
    return ProblemsConfig(source=path, split=cfg.split, fields=fields, name=name, limit=cfg.limit, where=where)


# -- readers ------------------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def read_row(fmt: str, rec: dict, options: dict, where: str) -> dict | None:
    """A hub row of benchmark format `fmt` as a plain problem record {id, problem, answer, ...}, or None
    when the row is left out (outside LiveCodeBench's date window)."""
    if fmt == "gpqa":
        return _gpqa(rec, options, where)
    if fmt == "livecodebench":
        return _livecodebench(rec, options, where)
    raise BenchmarkError(f"{where}: unknown benchmark format {fmt!r}")


def _gpqa(rec: dict, options: dict, where: str) -> dict:
    seed = int(options.get("seed", 0))
    if "Question" not in rec:  # already {id, problem, answer, options}
        missing = [k for k in ("problem", "answer", "options") if k not in rec]
        if missing:
            raise BenchmarkError(f"{where}: a GPQA row needs the hub's fields (Question, Correct Answer, Incorrect "
                                 f"Answer 1-3) or problem/answer/options; missing {missing}")
        return rec
    wrong = [rec.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
    right = rec.get("Correct Answer")
    if right in (None, "") or any(w in (None, "") for w in wrong):
        raise BenchmarkError(f"{where}: a GPQA row needs `Correct Answer` and `Incorrect Answer 1`-`3`")
    pid = str(rec.get("Record ID") or rec.get("id") or rec["Question"][:64])
    opts = [str(right).strip(), *(str(w).strip() for w in wrong)]
    order = list(range(len(opts)))
    random.Random(f"{seed}:{pid}").shuffle(order)  # per problem, reproducible, independent of row order
    shown = [opts[i] for i in order]
    letter = LETTERS[order.index(0)]
    text = str(rec["Question"]).strip() + "\n\n" + "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(shown))
    return {"id": pid, "problem": text, "answer": letter, "options": shown, "shuffle_seed": seed,
            "domain": rec.get("High-level domain"), "grader": "simple-evals"}


# 512 MB of decompressed tests at most: a problem's private tests are tens of MB; more is a zip bomb.
MAX_TESTS_BYTES = 512 << 20


class _NoGlobals(pickle.Unpickler):
    """Rebuilds only what pickle's own opcodes make (str, bytes, numbers, lists, dicts, tuples): any
    global, and so any callable, is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"the tests' pickle names {module}.{name}: refused (only plain data is read)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("the tests' pickle has a persistent id: refused")


def decode_tests(value: Any, where: str = "private_test_cases") -> list:
    """LiveCodeBench's test cases: a list, a JSON string, or base64(zlib(pickle(JSON string)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, (str, bytes)):
        raise BenchmarkError(f"{where}: expected a JSON string or an encoded string, got {type(value).__name__}")
    text = value.decode() if isinstance(value, bytes) else value
    if text.lstrip()[:1] in ("[", ""):
        try:
            return json.loads(text) if text.strip() else []
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{where}: not valid JSON ({e})") from None
    try:
        packed = base64.b64decode(text, validate=False)
        z = zlib.decompressobj()
        raw = z.decompress(packed, MAX_TESTS_BYTES)
        if z.unconsumed_tail:
            raise BenchmarkError(f"{where}: the tests decompress to more than {MAX_TESTS_BYTES >> 20} MB")
        obj = _NoGlobals(io.BytesIO(raw)).load()
    except BenchmarkError:
        raise
    except (ValueError, zlib.error, pickle.UnpicklingError, EOFError, TypeError) as e:
        raise BenchmarkError(f"{where}: neither JSON nor base64(zlib(pickle)) that holds plain data ({e})") from None
    if isinstance(obj, bytes):
        obj = obj.decode()
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{where}: the decoded tests are not JSON ({e})") from None
    if not isinstance(obj, list):
        raise BenchmarkError(f"{where}: the decoded tests are a {type(obj).__name__}, not a list")
    return obj


def _date(value: Any) -> str:
    return str(value or "")[:10]


def _when(value: Any, what: str) -> datetime.datetime | None:
    """An ISO date or date-time as a naive UTC time stamp; a bare date is its midnight, as LiveCodeBench
    reads its --start_date/--end_date (so an end of 2025-01-31 leaves out a contest at 2025-01-31T14:30)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        t = value
    elif isinstance(value, datetime.date):
        t = datetime.datetime(value.year, value.month, value.day)
    else:
        try:
            t = datetime.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise BenchmarkError(f"{what} {value!r} is not an ISO date (2025-01-31) or date-time") from None
    if t.tzinfo is not None:
        t = t.astimezone(datetime.UTC).replace(tzinfo=None)
    return t


def _livecodebench(rec: dict, options: dict, where: str) -> dict | None:
    if "question_content" not in rec:  # already a plain code problem
        return rec
    day = _date(rec.get("contest_date"))
    when = _when(rec.get("contest_date"), f"{where} contest_date")
    start = _when(options.get("start"), "livecodebench.start")
    end = _when(options.get("end"), "livecodebench.end")
    if when and ((start and when < start) or (end and when > end)):
        return None
    tests = decode_tests(rec.get("public_test_cases") or "[]", f"{where} public_test_cases") + \
        decode_tests(rec.get("private_test_cases") or "[]", f"{where} private_test_cases")
    if not tests:
        raise BenchmarkError(f"{where}: a LiveCodeBench problem without test cases")
    kinds = {str(t.get("testtype", "stdin")) for t in tests if isinstance(t, dict)}
    meta = rec.get("metadata") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            meta = {}
    out = {"id": str(rec.get("question_id") or rec.get("id")), "problem": str(rec["question_content"]).strip(),
           "answer": "", "platform": rec.get("platform"), "contest_date": day, "difficulty": rec.get("difficulty"),
           "title": rec.get("question_title"), "grader": "livecodebench",
           "test_timeout": float(options.get("timeout") or 6.0)}
    if kinds == {"functional"}:
        fn = meta.get("func_name") if isinstance(meta, dict) else None
        out.update(kind="call", fn_name=fn, starter_code=rec.get("starter_code") or "",
                   tests=[{"input": t["input"], "output": t["output"]} for t in tests])
    elif kinds == {"stdin"}:
        out.update(kind="stdio", tests=[{"input": t["input"], "output": t["output"]} for t in tests])
    else:
        raise BenchmarkError(f"{where}: test types {sorted(kinds)}: expected all stdin or all functional")
    return out
