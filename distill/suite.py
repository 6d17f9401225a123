"""Evaluation protocols as one switch, suites of benchmarks, and a Table-5-shaped report.

    distill eval --model M --benchmark aime24 --protocol r1
    distill eval --model M --suite r1 --out runs/eval/m     # AIME 2024, MATH-500, GPQA Diamond, LiveCodeBench

The R1 protocol (DeepSeek-R1 report, arXiv 2501.12948, section 3.1 "Evaluation Setup"): no system
prompt; the instruction "Please reason step by step, and put your final answer within \\boxed{}.";
the output forced to begin with "<think>\\n"; temperature 0.6, top-p 0.95, up to 32,768 generated
tokens; pass@1 the mean correctness of k samples per problem, and cons@64 on AIME. The report says k
is between 4 and 64 depending on the test set's size and names only AIME's (64); the other k are
open-r1's evaluation settings (its README: 64 for AIME, 4 for MATH-500, 8 for GPQA Diamond, 16 for
LiveCodeBench). GPQA Diamond is asked with simple-evals' multiple-choice prompt, as the report did, and
read as simple-evals reads it (the rows say grader: simple-evals). What a recipe or `--set` names explicitly wins
over the preset (a CPU smoke run shortens max_tokens), and `eval.json` records the preset and what
was changed, so a result says how it was produced.

The report puts the published row of the same model beside the measured one when the model is one
of the six R1 distilled students (`PUBLISHED`, from the report's Table 5); a model it does not know
gets no published row. A second panel shows current open students (`OPEN_STUDENTS`), and every
published row states how it was measured (`R1_PROTOCOL`, `OPEN_PROTOCOL`) and where that differs from
this run. Published numbers come from one sampling run each at its k: a measured
pass@1 with few samples or problems differs from them by sampling variance (see the intervals),
and dataset versions differ (LiveCodeBench's window and release, GPQA's option order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from distill.benchmarks import canonical
from distill.config import Recipe

# simple-evals' QUERY_TEMPLATE_MULTICHOICE (openai/simple-evals common.py), which the R1 report's GPQA Diamond
# figures were measured with; distill's GPQA rows are its "{Question}\n\nA) ...\nD) ..." already.
GPQA_SIMPLE_EVALS = ("Answer the following multiple choice question. The last line of your response should be of "
                     "the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think "
                     "step by step before answering.\n\n{problem}")

PROTOCOLS: dict[str, dict] = {
    "r1": {
        "prompt": {"template": "r1", "system": None, "instruction": None, "force_think": True},
        # per benchmark, over `prompt`: GPQA asked as simple-evals asks it (and read as it reads it: the
        # rows carry grader: simple-evals, distill/verify/choice.py)
        "benchmark_prompt": {"gpqadiamond": {"instruction": GPQA_SIMPLE_EVALS}},
        "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768},
        "k": {"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4, "gpqadiamond": 8, "livecodebench": 16},
        "source": "DeepSeek-R1 report (arXiv 2501.12948) section 3.1; k besides AIME's 64: open-r1's evaluation",
    },
}

SUITES: dict[str, list[str]] = {"r1": ["aime24", "math500", "gpqa_diamond", "livecodebench"]}

# DeepSeek-R1 report (arXiv 2501.12948), Table 5: AIME 2024 pass@1 and cons@64, MATH-500 pass@1,
# GPQA Diamond pass@1, LiveCodeBench pass@1 (2024-08 to 2025-01), Codeforces rating.
PUBLISHED: dict[str, dict[str, float]] = {
    "DeepSeek-R1-Distill-Qwen-1.5B": {"aime24 pass@1": 28.9, "aime24 cons@64": 52.7, "math500 pass@1": 83.9,
                                      "gpqadiamond pass@1": 33.8, "livecodebench pass@1": 16.9, "codeforces": 954},
    "DeepSeek-R1-Distill-Qwen-7B": {"aime24 pass@1": 55.5, "aime24 cons@64": 83.3, "math500 pass@1": 92.8,
                                    "gpqadiamond pass@1": 49.1, "livecodebench pass@1": 37.6, "codeforces": 1189},
    "DeepSeek-R1-Distill-Qwen-14B": {"aime24 pass@1": 69.7, "aime24 cons@64": 80.0, "math500 pass@1": 93.9,
                                     "gpqadiamond pass@1": 59.1, "livecodebench pass@1": 53.1, "codeforces": 1481},
    "DeepSeek-R1-Distill-Qwen-32B": {"aime24 pass@1": 72.6, "aime24 cons@64": 83.3, "math500 pass@1": 94.3,
                                     "gpqadiamond pass@1": 62.1, "livecodebench pass@1": 57.2, "codeforces": 1691},
    "DeepSeek-R1-Distill-Llama-8B": {"aime24 pass@1": 50.4, "aime24 cons@64": 80.0, "math500 pass@1": 89.1,
                                     "gpqadiamond pass@1": 49.0, "livecodebench pass@1": 39.6, "codeforces": 1205},
    "DeepSeek-R1-Distill-Llama-70B": {"aime24 pass@1": 70.0, "aime24 cons@64": 86.7, "math500 pass@1": 94.5,
                                      "gpqadiamond pass@1": 65.2, "livecodebench pass@1": 57.5, "codeforces": 1633},
}
SOURCE = "DeepSeek-R1 report (arXiv 2501.12948), Table 5"

# How each published row was measured, field by field as this run's settings say it (None: the source does
# not say). Per benchmark: k (samples a problem), max_tokens, and the version/window of the set.
R1_PROTOCOL = {
    "source": "DeepSeek-R1 report (arXiv 2501.12948) section 3.1",
    "temperature": 0.6, "top_p": 0.95, "max_tokens": 32768,
    # "k between 4 and 64 depending on the test set's size": the report names 64 only for AIME
    "k": {"aime24": 64, "math500": None, "gpqadiamond": None, "livecodebench": None},
    "sets": {"livecodebench": "2024-08-01 to 2025-01-31", "gpqadiamond": "simple-evals' prompt, 198 questions"},
}
# The second panel: open students published since the R1 report, named with the source of their numbers.
# OpenReasoning-Nemotron: SFT alone on R1-0528 traces (Qwen2.5-1.5B/7B-Instruct bases); its model card
# (huggingface.co/nvidia/OpenReasoning-Nemotron-1.5B and -7B, July 2025) gives AIME as avg@64, up to 64K
# output tokens, and LiveCodeBench on the v6 window (2024-08 to 2025-05); it states neither the sampling
# temperature nor k for GPQA and LiveCodeBench, and no MATH-500 figure.
OPEN_STUDENTS: dict[str, dict] = {
    "OpenReasoning-Nemotron-1.5B": {"aime24 pass@1": 55.5, "gpqadiamond pass@1": 31.6, "livecodebench pass@1": 28.6},
    "OpenReasoning-Nemotron-7B": {"aime24 pass@1": 84.7, "gpqadiamond pass@1": 61.1, "livecodebench pass@1": 63.3},
}
OPEN_PROTOCOL = {
    "source": "nvidia/OpenReasoning-Nemotron-1.5B and -7B model cards (Hugging Face, 2025-07)",
    "temperature": None, "top_p": None, "max_tokens": 65536,
    "k": {"aime24": 64, "gpqadiamond": None, "livecodebench": None},
    "sets": {"livecodebench": "v6: 2024-08-01 to 2025-05-31"},
}


def run_protocol(by: dict[str, dict]) -> dict:
    """This run's protocol in the published rows' terms, from each benchmark's eval.json settings."""
    out = {"temperature": set(), "top_p": set(), "max_tokens": set(), "k": {}, "sets": {}, "engine": {}}
    for b, d in by.items():
        st = d["settings"]
        for key in ("temperature", "top_p", "max_tokens"):
            out[key].add(st["sampling"].get(key))
        # loop and budget control in the engine: the published rows had none
        controls = {k: st["sampling"][k] for k in ("thinking_token_budget", "repetition_detection")
                    if st["sampling"].get(k) is not None}
        if controls:
            out["engine"][b] = controls
        out["k"][b] = st["k"]
        opts = st.get("benchmark_options") or {}
        if b == "livecodebench" and opts:
            out["sets"][b] = f"{opts.get('start') or 'any'} to {opts.get('end') or 'any'}"
        if b == "gpqadiamond":
            instr = (st.get("prompt") or {}).get("instruction") or ""
            out["sets"][b] = "simple-evals' prompt" if "'Answer: $LETTER'" in instr else "another prompt"
    for key in ("temperature", "top_p", "max_tokens"):
        v = out[key]
        out[key] = next(iter(v)) if len(v) == 1 else sorted(v, key=str)
    return out


def protocol_differences(published: dict, run: dict) -> list[str]:
    """Where a published row was measured otherwise than this run (what the source does not state, too)."""
    diffs = []
    for key in ("temperature", "top_p", "max_tokens"):
        if published[key] is None:
            diffs.append(f"{key}: not stated by the source (this run: {run[key]})")
        elif published[key] != run[key]:
            diffs.append(f"{key} {published[key]} (this run: {run[key]})")
    for b, k in run["k"].items():
        pk = published["k"].get(b, "absent")
        if pk == "absent":
            continue
        if pk is None:
            diffs.append(f"{b} k: not stated by the source (this run: {k})")
        elif pk != k:
            diffs.append(f"{b} k={pk} (this run: {k})")
    for b, controls in (run.get("engine") or {}).items():
        for k, v in controls.items():
            diffs.append(f"{b} {k}: none in the source (this run: {v})")
    for b, what in published["sets"].items():
        mine = run["sets"].get(b)
        if b in run["k"] and mine is not None and not what.startswith(mine):
            diffs.append(f"{b}: {what} (this run: {mine})")
    return diffs

# (benchmark, figure, column title) of the Table-5 shape
COLUMNS = [("aime24", "pass@1", "AIME 2024 pass@1"), ("aime24", "cons@64", "AIME 2024 cons@64"),
           ("math500", "pass@1", "MATH-500 pass@1"), ("gpqadiamond", "pass@1", "GPQA Diamond pass@1"),
           ("livecodebench", "pass@1", "LiveCodeBench pass@1"), (None, "codeforces", "Codeforces rating")]


class SuiteError(ValueError):
    """A protocol or suite that does not exist; the message lists those that do."""


def protocol(name: str) -> dict:
    if name not in PROTOCOLS:
        raise SuiteError(f"--protocol {name!r}: known protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def suite(name: str) -> list[str]:
    if name not in SUITES:
        raise SuiteError(f"--suite {name!r}: known suites are {', '.join(SUITES)}")
    return SUITES[name]


def apply_protocol(recipe: Recipe, name: str, benchmark: str, explicit: set[str] = frozenset(),
                   k: int | None = None) -> tuple[Recipe, int, dict]:
    """(the recipe with the preset applied, k for this benchmark, the record for eval.json).

    `explicit`: dotted keys the user set (`--set sampling.max_tokens=64`); they keep their values.
    `k`: an explicit --k, which wins over the preset's."""
    p = protocol(name)
    r = recipe.model_copy(deep=True)
    kept = []
    for section in ("prompt", "sampling"):
        values = getattr(r, section).model_dump()
        for key, v in p[section].items():
            if f"{section}.{key}" in explicit:
                kept.append(f"{section}.{key}")
                continue
            values[key] = v
        setattr(r, section, type(getattr(r, section)).model_validate(values))
    extra = p.get("benchmark_prompt", {}).get(canonical(benchmark), {})
    if extra:
        values = r.prompt.model_dump()
        for key, v in extra.items():
            if f"prompt.{key}" in explicit:
                if f"prompt.{key}" not in kept:
                    kept.append(f"prompt.{key}")
                continue
            values[key] = v
        r.prompt = type(r.prompt).model_validate(values)
    preset_k = p["k"].get(canonical(benchmark))
    kk = k or preset_k or r.eval.k
    if k and preset_k and k != preset_k:
        kept.append(f"k={k} (the protocol's {preset_k})")
    record = {"name": name, "source": p["source"], "k": kk, "protocol_k": preset_k, "overridden": kept}
    return r, kk, record


def published_row(model: str) -> tuple[str, dict] | None:
    """(name, Table 5 row) when `model` (a hub id or a directory named after it) is one of the six students."""
    tail = Path(str(model).rstrip("/")).name.lower()
    for name, row in PUBLISHED.items():
        if tail == name.lower() or str(model).lower().endswith("/" + name.lower()):
            return name, row
    return None


def _cell(fig: dict | None, scale: float = 100) -> str:
    if not fig:
        return "-"
    return f"{scale * fig['value']:.1f} [{scale * fig['low']:.1f}, {scale * fig['high']:.1f}]"


def report(model: str, results: dict[str, dict], out: Path, confidence: float = 0.95) -> dict:
    """Write report.md, report.json and report.png: one row per model in the Table-5 shape, with
    intervals, and the published row beside it. `results`: {benchmark: eval.json as loaded}."""
    by = {canonical(b): d for b, d in results.items()}
    row, notes = {}, []
    for bench, figure, title in COLUMNS:
        if bench is None:
            row[title] = None
            continue
        d = by.get(bench)
        if d is None:
            row[title] = None
            continue
        k = d["settings"]["k"]
        name = figure if figure != "cons@64" else f"cons@{k}"
        row[title] = {**d["figures"][name], "figure": name, "k": k,
                      "problems": d["settings"]["problems"]} if name in d["figures"] else None
        if figure == "cons@64" and k != 64:
            notes.append(f"AIME 2024 cons@64 is measured as cons@{k} (k={k} samples per problem)")
    pub = published_row(model)
    conf = int(round(confidence * 100))
    lines = [f"# {Path(str(model).rstrip('/')).name}: the R1 report's Table 5 columns", "",
             f"Each cell: value [{conf}% interval over problems]; k samples per problem and problems per "
             "benchmark below.", "",
             "| model | " + " | ".join(t for _, _, t in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    lines.append(f"| {Path(str(model).rstrip('/')).name} (measured) | "
                 + " | ".join(_cell(row[t]) if row[t] else "not measured" for _, _, t in COLUMNS) + " |")
    if pub:
        name, values = pub
        lines.append(f"| {name} (published) | " + " | ".join(
            str(values.get("codeforces" if b is None else f"{b} {f}", "-")) for b, f, _ in COLUMNS) + " |")
    mine = run_protocol(by)
    lines += ["", "## Current open students (published)", "",
              "Students released since the R1 report, for scale; their protocol is not this run's (below).", "",
              "| model | " + " | ".join(t for _, _, t in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, values in OPEN_STUDENTS.items():
        lines.append(f"| {name} (published) | " + " | ".join(
            str(values.get("codeforces" if b is None else f"{b} {f}", "-")) for b, f, _ in COLUMNS) + " |")
    lines += ["", "## How each row was measured", "",
              f"- this run: temperature {mine['temperature']}, top-p {mine['top_p']}, max_tokens {mine['max_tokens']}, "
              + ", ".join(f"{b} k={k}" for b, k in mine["k"].items())
              + "".join(f"; {b} {w}" for b, w in mine["sets"].items())]
    panels = []
    for label, prot in ((f"{pub[0]} (R1 report)" if pub else None, R1_PROTOCOL), ("OpenReasoning-Nemotron", OPEN_PROTOCOL)):
        if label is None:
            continue
        diffs = protocol_differences(prot, mine)
        panels.append({"rows": label, "protocol": prot, "differs_from_this_run": diffs})
        lines.append(f"- {label}: {prot['source']}; " + ("differs from this run: " + "; ".join(diffs) if diffs
                                                           else "the same protocol as this run"))
    lines.append("")
    for b, d in by.items():
        s = d["settings"]
        prot = s.get("protocol") or {}
        lines.append(f"- {b}: {s['problems']} problems x k={s['k']}, temperature {s['sampling']['temperature']}, "
                     f"top-p {s['sampling']['top_p']}, max_tokens {s['sampling']['max_tokens']}"
                     + (f", protocol {prot.get('name')}" if prot else "")
                     + (f" (changed: {', '.join(prot['overridden'])})" if prot.get("overridden") else "")
                     + (f", read as {s['benchmark_format']} {s['benchmark_options']}" if s.get("benchmark_format") else ""))
    lines += [f"- {n}" for n in notes]
    lines.append("- Codeforces rating: not measured by distill (it needs Codeforces' own judge and contest replays).")
    if pub:
        lines.append(f"- Published row: {SOURCE}. It comes from one run at the protocol's k on the full sets; "
                     "a measured figure from fewer samples or problems differs by sampling variance (its "
                     "interval), and dataset versions differ (LiveCodeBench's window and release, GPQA's option order).")
    else:
        lines.append("- No published row: this model is not one of the six R1 distilled students of Table 5.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    doc = {"model": model, "columns": [t for _, _, t in COLUMNS], "measured": row, "protocol": mine,
           "published": {"name": pub[0], "source": SOURCE, "row": pub[1], "protocol": R1_PROTOCOL} if pub else None,
           "open_students": {"rows": OPEN_STUDENTS, "protocol": OPEN_PROTOCOL}, "protocol_differences": panels,
           "notes": notes,
           "benchmarks": {b: {"eval": d.get("_path"), "settings": {k: d["settings"].get(k) for k in (
               "k", "problems", "sampling", "prompt", "protocol", "benchmark_format", "benchmark_options",
               "model_identity")}} for b, d in by.items()}}
    (out / "report.json").write_text(json.dumps(doc, indent=1, default=str))
    _plot(row, pub, out / "report.png", model)
    return doc


def _plot(row: dict, pub, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [t for b, _, t in COLUMNS if b is not None]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = range(len(cols))
    vals = [100 * row[t]["value"] if row.get(t) else float("nan") for t in cols]
    lo = [100 * (row[t]["value"] - row[t]["low"]) if row.get(t) else 0 for t in cols]
    hi = [100 * (row[t]["high"] - row[t]["value"]) if row.get(t) else 0 for t in cols]
    ax.bar([x - 0.2 for x in xs], vals, 0.4, yerr=[lo, hi], capsize=3, label="measured")
    if pub:
        keys = [f"{b} {f}" for b, f, _ in COLUMNS if b is not None]
        ax.bar([x + 0.2 for x in xs], [pub[1].get(k, float("nan")) for k in keys], 0.4, label=f"{pub[0]} (published)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([re.sub(r" (pass@1|cons@64)$", r"\n\1", c) for c in cols], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(f"{Path(str(model).rstrip('/')).name}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
