"""Did SFT teach the student? Generate with the untrained model and with the student on the same fresh
problems, run both through the same filter, and compare.

    python benchmarks/sft_before_after.py --student runs/quick/student --out runs/quick/before-after

Figures, each a share of all samples with a 95% interval (bootstrap over problems: the samples of
one problem are not independent; Wilson's interval with the problems as trials where every problem
scores the same, as at 0% and 100%, and the bootstrap would collapse to a point):
- accepted: passes the filter's per-sample checks (complete, format, correct, language, readable).
  Dedup and decontamination are off here: they judge a dataset, not a model, and dedup would
  penalise a student for answering the same problem consistently.
- correct: math-verify says the final answer equals the gold one.
- R1 format: the one format rule of `distill.verify.response.r1_format` (one closed, non-empty <think>
  block, then a \\boxed{} answer), as the filter, eval and the GRPO reward apply it.
- R1 format and correct.
The problems are the recipe's task drawn with another seed (--seed); for one-digit additions the
problem space is small (100 sums), so "fresh" means a new draw, not necessarily unseen sums.
Prints one table and writes before_after.json and before_after.png into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_recipe  # noqa: E402
from distill.console import console  # noqa: E402
from distill.filter import filter_samples  # noqa: E402
from distill.generate import generate  # noqa: E402

FIGURES = ("accepted", "correct", "R1 format", "R1 format and correct")


def figures(filtered: Path) -> dict[str, list[tuple[str, bool]]]:
    """(problem_id, hit) per sample for each figure."""
    rows = []
    for name in ("kept.jsonl", "rejected.jsonl"):
        with (filtered / name).open() as f:
            rows += [json.loads(line) for line in f if line.strip()]
    from distill.verify.response import r1_format, read_response

    out = {k: [] for k in FIGURES}
    for r in rows:
        v = r["verdicts"]
        r1 = r1_format(read_response(r["completion"], r.get("prompt_template"), r["shape"]), code=False)
        correct = v["correct"]["pass"] is True
        for k, hit in zip(FIGURES, (r["kept"], correct, r1, r1 and correct), strict=False):
            out[k].append((r["problem_id"], bool(hit)))
    return out


def bootstrap(pairs: list[tuple[str, bool]], reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile interval, resampling problems (clusters) with replacement."""
    by: dict[str, list[bool]] = {}
    for pid, hit in pairs:
        by.setdefault(pid, []).append(hit)
    sums = np.array([sum(v) for v in by.values()], dtype=float)
    counts = np.array([len(v) for v in by.values()], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(reps, len(sums)))
    boot = sums[idx].sum(1) / counts[idx].sum(1)
    mean, lo, hi = sums.sum() / counts.sum(), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))
    if hi - lo <= 1e-12:  # every problem alike (all 0% or all 100%): resampling cannot vary
        from distill.evaluate import wilson

        lo, hi = wilson(mean * len(sums), len(sums))  # the problems as trials: never a point
        lo, hi = min(lo, mean), max(hi, mean)
    return mean, lo, hi


def run_arm(recipe_path: str, model: str, out: Path, seed: int, count: int, n: int) -> dict:
    sets = [f"teacher.model={model}", f"problems.seed={seed}", f"problems.count={count}", f"sampling.n={n}",
            "filter.dedup.enabled=false", "filter.decontaminate.enabled=false"]
    r = load_recipe(recipe_path, sets)
    t0 = time.perf_counter()
    generate(r, out / "samples", progress=True)
    filter_samples(out / "samples", out / "filtered", r.filter, r.export, progress=False)
    figs = figures(out / "filtered")
    return {"model": model, "seconds": time.perf_counter() - t0, "samples": len(figs["accepted"]),
            **{k: bootstrap(v) for k, v in figs.items()}}


def plot(before: dict, after: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(FIGURES))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for off, arm, label in ((-0.2, before, "untrained"), (0.2, after, "after SFT")):
        m = np.array([arm[k][0] for k in FIGURES])
        lo = m - np.array([arm[k][1] for k in FIGURES])
        hi = np.array([arm[k][2] for k in FIGURES]) - m
        ax.bar(x + off, m, 0.4, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(x, FIGURES)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of samples (95% CI)")
    ax.set_title("SFT on filtered self-generated traces: fresh problems")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes/quickstart.yaml"))
    ap.add_argument("--base", default="embedded", help="the untrained model")
    ap.add_argument("--student", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1, help="problem seed; the quickstart trains on seed 0")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    a = ap.parse_args()
    out = Path(a.out)
    before = run_arm(a.recipe, a.base, out / "before", a.seed, a.count, a.n)
    after = run_arm(a.recipe, a.student, out / "after", a.seed, a.count, a.n)

    from rich.table import Table

    t = Table("figure", "untrained", "after SFT", title=f"{a.count} fresh problems x {a.n} samples (seed {a.seed})")
    for k in FIGURES:
        t.add_row(k, *(f"{arm[k][0]:.0%} [{arm[k][1]:.0%}, {arm[k][2]:.0%}]" for arm in (before, after)))
    console.print(t)
    (out / "before_after.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
    plot(before, after, out / "before_after.png")
    console.print(f"{out}/before_after.json  {out}/before_after.png")


if __name__ == "__main__":
    main()
