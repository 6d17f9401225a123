"""Did on-policy distillation teach the student? `distill eval` on fresh problems for the untrained student, the
on-policy student and (for reference) the teacher, the same settings for all, and `distill eval --compare` for the
paired difference student - untrained.

    python benchmarks/onpolicy_before_after.py --recipe recipes/onpolicy/quickstart.yaml \
        --student runs/quick/onpolicy --teacher runs/quick/student --out runs/quick/onpolicy-eval

The problems are the recipe's task drawn with another seed (--seed; the recipe trains on its own seed), written as a
JSONL benchmark. Every model is evaluated by the `distill eval` command itself (the recipe's sampling section: k
samples a problem, pass@1 with a 95% bootstrap interval over problems). Prints one table, writes before_after.json
and before_after.png into --out. docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIGURES = ("pass@1", "r1_format", "truncated", "mean_tokens")


def distill(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "distill", *args], cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"distill {' '.join(args)} failed ({r.returncode})")


def main() -> None:
    from distill.config import load_recipe
    from distill.tasks import generate_task

    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes/onpolicy/quickstart.yaml"))
    ap.add_argument("--base", default="embedded", help="the untrained student")
    ap.add_argument("--student", required=True, help="the on-policy student")
    ap.add_argument("--teacher", default=None, help="also evaluate the teacher, for reference")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1, help="problem seed of the held-out draw")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    r = load_recipe(a.recipe)
    if r.problems is None or not r.problems.task:
        raise SystemExit(f"{a.recipe}: needs a problems.task section to draw fresh problems from")
    train = {p.problem for p in generate_task(r.problems.task, r.problems.count, r.problems.seed, r.problems.task_options)}
    held = generate_task(r.problems.task, a.count, a.seed, r.problems.task_options)
    bench = out / "heldout.jsonl"
    bench.write_text("".join(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n" for p in held))
    overlap = sum(p.problem in train for p in held)
    models = {"untrained": a.base, "on-policy student": a.student}
    if a.teacher:
        models["teacher"] = a.teacher
    res = {}
    for name, model in models.items():
        d = out / name.replace(" ", "-")
        distill("eval", "--model", model, "--benchmark", str(bench), "--recipe", a.recipe, "--k", str(a.k),
                "--out", str(d), "--set", "eval.workers=0", "--no-progress")
        res[name] = json.loads((d / "eval.json").read_text())["figures"]
    from distill.evaluate import compare

    c = compare(out / "on-policy-student", out / "untrained")
    print(f"\n{len(held)} held-out problems (seed {a.seed}; {overlap} also in the training draw) x k={a.k}, "
          "95% bootstrap intervals over problems\n")
    print("| model | " + " | ".join(FIGURES) + " |\n|---|" + "---|" * len(FIGURES))
    for name, f in res.items():
        cells = [f"{f[k]['value']:.1f}" if k == "mean_tokens" else
                 f"{f[k]['value']:.1%} [{f[k]['low']:.1%}, {f[k]['high']:.1%}]" for k in FIGURES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    d = c["figures"]["pass@1"]
    verdict = "the interval excludes 0" if d["low"] > 0 or d["high"] < 0 else "the interval includes 0"
    print(f"\non-policy student - untrained, pass@1: {d['diff']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}] "
          f"(paired over {c['problems']} problems; {verdict})")
    (out / "before_after.json").write_text(json.dumps({"figures": res, "compare": c, "problems": len(held),
                                                       "overlap": overlap, "k": a.k, "models": models}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = list(res)
    for j, key in enumerate(("pass@1", "r1_format", "truncated")):
        v = [res[n][key]["value"] for n in names]
        err = [[res[n][key]["value"] - res[n][key]["low"] for n in names],
               [res[n][key]["high"] - res[n][key]["value"] for n in names]]
        ax.bar([i + 0.27 * (j - 1) for i in range(len(names))], v, 0.27, yerr=err, capsize=3, label=key)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"distill eval on {len(held)} fresh problems x {a.k} (95% CIs)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "before_after.png", dpi=110)


if __name__ == "__main__":
    main()
