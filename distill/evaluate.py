"""The eval stage: k samples per problem from any teacher backend, scored by the filter's verifier.

    distill eval --model runs/quick/student --benchmark math500 --k 4
    distill eval --compare runs/a/eval.json runs/b/eval.json

The R1 report's protocol: k samples per problem at temperature 0.6 and top-p 0.95; pass@1 is the
mean correctness over the k samples (averaged over problems); cons@k is the correctness of the
majority answer. Every figure gets a bootstrap interval over problems: the k samples of one
problem are not independent, so resampling samples would make the interval too narrow.

Generation goes through `distill.generate` into a sample store inside the output directory, so
an interrupted evaluation resumes where it stopped; correctness is the filter's `correct` check
(`distill.verify.batch.judge`), so a sample the filter would keep as correct is a pass here.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from distill.benchmarks import (  # noqa: F401 - the registry, re-exported for callers of distill.evaluate
    HUB_BENCHMARKS,
    SPLIT_FIELD,
    BenchmarkError,
    resolve_benchmark,
)
from distill.config import (
    EvalConfig,
    FilterConfig,
    Recipe,
    RecipeError,
    recipe_dict,
)
from distill.data import DataError

# An evaluation that cannot run or compare; the message says the fix. One class with the registry's,
# so that a benchmark that cannot be resolved is an EvalError to callers.
EvalError = BenchmarkError


# -- estimators ---------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} needs at least k samples, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority(answers: list[str | None], correct: list[bool], same=None) -> dict:
    """cons@k for one problem: the majority vote over the samples' answers, grouped by verified equality.

    Samples with no answer do not vote. Every sample judged correct is equal to the gold, so all of them
    are one group, however differently they wrote it (`Interval(0, 1)`, `0 \\le x \\le 1`); the others
    are grouped by equal text, then merged where `same(a, b)` (math-verify on the two answers as
    written) finds them equal. A tie between groups scores the expected correctness of a uniform
    random pick among the tied groups (one right of two tied: 0.5), so the figure does not depend on
    sample order; `tied` says how many groups tied.
    """
    groups: list[dict] = []
    gold: dict | None = None
    for a, ok in zip(answers, correct, strict=True):
        if a is None or not str(a).strip():
            continue
        a = str(a).strip()
        if ok:
            if gold is None:
                gold = {"answer": a, "votes": 0, "correct": True}
                groups.append(gold)
            gold["votes"] += 1
            continue
        for g in groups:
            if not g["correct"] and (a == g["answer"] or (same is not None and same(g["answer"], a))):
                g["votes"] += 1
                break
        else:
            groups.append({"answer": a, "votes": 1, "correct": False})
    if not groups:
        return {"answer": None, "votes": 0, "score": 0.0, "tied": 0}
    top = max(g["votes"] for g in groups)
    tied = [g for g in groups if g["votes"] == top]
    score = sum(g["correct"] for g in tied) / len(tied)
    return {"answer": tied[0]["answer"], "votes": top, "score": score, "tied": len(tied)}


def voted_answer(final: str | None, verdict: dict) -> str | None:
    """The answer a sample votes with in cons@k, from its final part (after the reasoning): its last box
    as written (math-verify compares those texts), the letter read for a multiple-choice problem, else
    what the verifier parsed."""
    from distill.verify import find_boxed
    from distill.verify.choice import choice_gold

    value = verdict.get("value") if isinstance(verdict.get("value"), dict) else {}
    pred = value.get("pred")
    if value.get("gold") is not None and choice_gold(str(value["gold"])):
        return pred
    boxed = find_boxed(final or "")
    return boxed[-1].strip() if boxed and boxed[-1].strip() else pred


def _equivalent(a: str, b: str) -> bool:
    from distill.verify import check_answer

    try:
        return check_answer(a, "\\boxed{" + b + "}", timeout=2)["status"] == "correct"
    except Exception:  # noqa: BLE001 - an answer math-verify cannot compare stays its own group
        return False


def bootstrap_ci(values, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile interval of the mean over items (problems), resampled with replacement."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(reps, v.size))].mean(axis=1)
    a = (1 - confidence) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion; never zero-width for n > 0, even at 0% and 100%."""
    from scipy.stats import norm

    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(values, reps: int = 2000, confidence: float = 0.95, seed: int = 0,
             proportion: bool = True) -> dict:
    """{value, low, high, method} of a mean over problems.

    The percentile bootstrap over problems, except where it collapses to a point: when every problem
    has the same value (all solved, none solved) resampling cannot vary, and `0% [0%, 0%]` would
    claim certainty that n problems cannot give. A proportion then gets the Wilson score interval
    with the problems as trials.
    """
    m, lo, hi = bootstrap_ci(values, reps, confidence, seed)
    if proportion and len(values) and hi - lo <= 1e-12:
        lo, hi = wilson(m * len(values), len(values), confidence)
        return {"value": m, "low": min(lo, m), "high": max(hi, m), "method": "wilson"}
    return {"value": m, "low": lo, "high": hi, "method": "bootstrap"}


def paired_bootstrap(a, b, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Difference of means a - b over the same items, with an interval from resampling items jointly."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(reps, d.size))].mean(axis=1)
    q = (1 - confidence) / 2
    low, high, method = float(np.quantile(means, q)), float(np.quantile(means, 1 - q)), "paired bootstrap"
    if high - low <= 1e-12 and a.size and a.min() >= 0 and b.min() >= 0 and a.max() <= 1 and b.max() <= 1:
        # Every problem differs by the same amount (often: none differs), so resampling cannot vary.
        # Newcombe's hybrid score interval from the two Wilson intervals (his method 10 without the
        # correlation term: wider than the paired truth, never a point).
        la, ua = wilson(a.sum(), a.size, confidence)
        lb, ub = wilson(b.sum(), b.size, confidence)
        pa, pb = float(a.mean()), float(b.mean())
        low = pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
        high = pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
        method = "newcombe (wilson)"
        # The resamples cannot vary, so their sign says nothing: the sign probability comes from the same
        # interval (a normal reading of its half-width on zero's side), so that an interval holding 0 never
        # sits beside "P(other sign) = 0.000" (it did: [-17.5, 87.5] beside 0.000).
        from statistics import NormalDist

        z = NormalDist().inv_cdf(1 - q)
        diff = float(d.mean())
        half = (diff - low) if diff >= 0 else (high - diff)
        p_sign = 0.5 if diff == 0 else float(NormalDist().cdf(-abs(diff) * z / half)) if half > 0 else 0.0
    else:
        # share of resamples on the other side of zero: a bootstrap analogue of a one-sided p-value, from
        # the same resamples as the interval
        p_sign = float(min((means <= 0).mean(), (means >= 0).mean()))
    return {"a": float(a.mean()), "b": float(b.mean()), "diff": float(d.mean()), "low": low, "high": high,
            "method": method, "p_sign": p_sign}


def default_ks(k: int, extra: list[int] | None = None) -> list[int]:
    ks = {1, k} | {2 ** i for i in range(1, 20) if 2 ** i < k} | set(extra or [])
    return sorted(x for x in ks if 1 <= x <= k)


# -- running ------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    figures: dict = field(default_factory=dict)  # name -> {value, low, high}
    problems: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    out: str = ""

    def table(self) -> Table:
        s = self.settings
        conf = int(round(s.get("confidence", 0.95) * 100))
        t = Table(title=f"distill eval: {s.get('model')} on {s.get('benchmark')} "
                        f"({s.get('problems')} problems x k={s.get('k')})")
        t.add_column("figure")
        t.add_column("value", justify="right")
        t.add_column(f"{conf}% CI (problems)", justify="right")
        bad = sum(h.get("unparseable", 0) for h in (s.get("gold_health") or {}).values())
        if bad:
            t.caption = (f"{bad} of {s.get('problems')} golds do not parse: those problems count as failed "
                         "(see settings.gold_health in eval.json)")
        for name, f in self.figures.items():
            if name == "mean_tokens":
                t.add_row("mean completion tokens", f"{f['value']:.1f}", f"[{f['low']:.1f}, {f['high']:.1f}]")
            else:
                t.add_row(name, f"{100 * f['value']:.1f}", f"[{100 * f['low']:.1f}, {100 * f['high']:.1f}]")
        return t


def check_loadable(benchmarks: list[str], cfg: EvalConfig) -> None:
    """Every benchmark of a suite loads, before anything is generated: a suite that would fail at its third
    benchmark fails now, with the eval keys that fix it (not after hours of generating the first two)."""
    from distill.data import DataError, load_problems

    for b in benchmarks:
        try:
            load_problems(resolve_benchmark(b, cfg))
        except (DataError, ValueError) as e:
            from distill.benchmarks import canonical

            name = canonical(b)
            raise EvalError(f"benchmark {b} cannot be loaded, and nothing was generated: {e}. For `distill eval`, "
                            f"point eval.benchmarks.{b} (or $DISTILL_BENCHMARK_{name.upper()}, or a directory in "
                            f"$DISTILL_BENCHMARKS holding {name}.jsonl) at a local copy") from None


def judge_config(cfg: EvalConfig, code: dict) -> FilterConfig:
    """The filter's own checks, with only what decides a pass switched on: complete (for the record: a
    truncated sample has no final answer and fails `correct` anyway), format, correct."""
    return FilterConfig.model_validate({
        "format": {"shape": cfg.shape, "require_boxed": False},
        "correct": {"timeout": cfg.timeout, "code": code},
        "language": {"enabled": False}, "readable": {"enabled": False},
        "dedup": {"enabled": False}, "decontaminate": {"enabled": False}, "workers": cfg.workers,
    })


def score(samples: list[dict], verdicts: list[dict], k: int, ks: list[int], cfg: EvalConfig,
          order: list[str] | None = None) -> tuple[dict, list[dict]]:
    """(figures, per-problem rows) from judged samples; each figure is a mean over problems with its interval."""
    from distill.verify.batch import code_specs
    from distill.verify.response import r1_format, read_response

    code = code_specs(samples)

    by: dict[str, list[tuple[dict, dict]]] = {}
    for s, v in zip(samples, verdicts, strict=True):
        by.setdefault(s["problem_id"], []).append((s, v))
    rows = []
    for pid in order or list(by):
        group = sorted(by.get(pid, []), key=lambda x: x[0]["sample_index"])
        if not group:
            continue
        correct = [v["correct"]["pass"] is True for _, v in group]
        # once a sample, read as the filter's checks read it (the same template and shape)
        parsed = [read_response(s["completion"], s.get("prompt_template"), cfg.shape) for s, _ in group]
        preds = [voted_answer(p.final, v["correct"]) for p, (_, v) in zip(parsed, group, strict=True)]
        n, c = len(group), sum(correct)
        is_code = pid in code
        r1 = [r1_format(p, is_code) for p in parsed]  # the one format rule (distill/verify/response.py)
        # No majority vote over programs: two correct programs rarely have the same text.
        cons = {"score": None, "answer": None, "votes": None, "tied": None} if is_code else \
            majority(preds, correct, _equivalent)
        row = {"id": pid, "answer": group[0][0]["answer"], "n": n, "correct": c, "pass@1": c / n,
               f"cons@{k}": cons["score"], "majority": cons["answer"], "majority_votes": cons["votes"],
               "tied_groups": cons["tied"],
               "truncated": sum(s["finish_reason"] == "length" for s, _ in group) / n,
               "r1_format": sum(r1) / n,
               "mean_tokens": sum(s.get("completion_tokens") or 0 for s, _ in group) / n}
        for kk in ks:
            if kk > 1:
                row[f"pass@{kk}"] = pass_at_k(n, c, kk) if kk <= n else None
        if is_code:  # the share of a problem's tests its samples pass: partial credit, for the record
            vals = [v["correct"]["value"] for _, v in group]
            row["tests_passed"] = sum(x.get("passed", 0) / max(1, x.get("total") or 1) if isinstance(x, dict) else 0.0
                                      for x in vals) / n
        rows.append(row)
    if not rows:
        raise EvalError("no samples to score")
    names = (["pass@1", f"cons@{k}"] + [f"pass@{kk}" for kk in ks if kk > 1]
             + ["tests_passed", "truncated", "r1_format", "mean_tokens"])
    figures = {}
    for name in names:
        vals = [r[name] for r in rows if r.get(name) is not None]
        if not vals:
            continue
        f = interval(vals, cfg.bootstrap, cfg.confidence, cfg.seed, proportion=name != "mean_tokens")
        figures[name] = {**f, "problems": len(vals)}
    return figures, rows


def evaluate(recipe: Recipe, model: str, benchmark: str, out: str | Path, k: int | None = None,
             backend: str | None = None, progress: bool = True, teacher=None, protocol: dict | None = None,
             shard: tuple[int, int] | None = None) -> EvalResult | None:
    """Generate k samples per problem with `model`, judge them with the filter's checks, write eval.json.

    protocol: the preset's record (distill/suite.py `apply_protocol`), kept in eval.json.
    shard: (i, N) generates only this slice of the problems into the store and returns None; several
    GPUs or nodes each run a shard, then one run without a shard finds every sample and scores.
    One run per `out` (per shard of it), refused at once otherwise (distill/lock.py)."""
    from distill.lock import output_lock

    name = f".distill.eval-{shard[0]}-of-{shard[1]}.lock" if shard else ".distill.lock"
    with output_lock(out, "distill eval", name=name):
        return _evaluate(recipe, model, benchmark, out, k, backend, progress, teacher, protocol, shard)


def _evaluate(recipe: Recipe, model: str, benchmark: str, out, k, backend, progress: bool, teacher, protocol,
              shard) -> EvalResult | None:
    from distill.filter import read_samples
    from distill.generate import generate, plan, teacher_identity
    from distill.store import versions

    start = time.monotonic()
    cfg = recipe.eval
    k = k or cfg.k
    out = Path(out)
    problems = resolve_benchmark(benchmark, cfg)
    r = recipe.model_copy(deep=True)
    r.teacher.model = model
    if backend:
        if backend not in ("hf", "vllm", "openai"):
            raise EvalError(f"--backend {backend!r}: use hf, vllm or openai")
        r.teacher.backend = backend
    r.problems = problems
    r.sampling.n = k
    ks = default_ks(k, cfg.pass_k)

    ident = teacher_identity(r)
    _note_model_change(out, model, ident)
    summary = generate(r, out / "samples", shard=shard, progress=progress, teacher=teacher)
    if summary.status == "interrupted":
        raise KeyboardInterrupt
    if shard is not None:
        return None
    plist, rows = plan(r, None)
    wanted = {row[0] for row in rows}
    samples = [s for s in read_samples(out / "samples")[0] if s["key"] in wanted]
    if len(samples) < len(wanted):
        from collections import Counter

        from distill.store import SampleStore

        fails = {k: f for k, f in SampleStore(out / "samples").failures().items() if k in wanted}
        why = ""
        if fails:
            causes = Counter(f["cause"] for f in fails.values())
            first = next(iter(fails.values()))
            why = (f" ({len(fails)} failed: " + ", ".join(f"{c} {n}" for c, n in causes.items())
                   + f"; e.g. {first['problem_id']}: {first['message']})")
        raise EvalError(f"{out / 'samples'}: {len(wanted) - len(samples)} of {len(wanted)} samples are missing{why}; "
                        "rerun the same command to generate them (an evaluation scores every problem, so it "
                        "needs all of them)")
    # Judged against the benchmark's gold as it is now, not as it was when a sample was generated
    # (a corrected gold must change the score).
    gold = {p.id: p.answer for p in plist}
    for s in samples:
        s["answer"] = gold.get(s["problem_id"], s["answer"])
    samples.sort(key=lambda s: (s["problem_id"], s["sample_index"]))

    fcfg = judge_config(cfg, recipe.filter.correct.code.model_dump())
    from distill.verify.batch import gold_health, judge

    verdicts, _ = judge(samples, fcfg, progress=progress)
    figures, prows = score(samples, verdicts, k, ks, cfg, order=[p.id for p in plist])
    health = gold_health(samples, verdicts)

    settings = {
        "model": model, "model_identity": {k: v for k, v in ident.items() if k != "path"},
        "backend": r.teacher.backend, "benchmark": benchmark,
        "source": problems.source, "split": problems.split, "problems": len(prows), "k": k, "pass_k": ks,
        # how a benchmark's rows were read: GPQA's shuffle seed, LiveCodeBench's release and date window
        "benchmark_format": problems.format, "benchmark_options": problems.format_options,
        "protocol": protocol,
        "sampling": r.sampling.model_dump(), "prompt": r.prompt.model_dump(), "confidence": cfg.confidence,
        "bootstrap": cfg.bootstrap, "bootstrap_seed": cfg.seed,
        "generation": {"seconds": round(summary.gen_s, 2), "generated": summary.generated,
                       "reused": summary.present, "tokens_per_s": round(summary.tokens_per_s, 2)},
        "seconds": round(time.monotonic() - start, 2), "recipe": recipe_dict(r), "versions": versions(),
        "gold_health": health,
    }
    sample_rows = [{
        "key": s["key"], "problem_id": s["problem_id"], "sample_index": s["sample_index"],
        "completion": s["completion"], "finish_reason": s["finish_reason"],
        "completion_tokens": s.get("completion_tokens"),
        "verdicts": {c: v[c] for c in ("complete", "format", "correct")}, "correct": v["correct"]["pass"] is True,
    } for s, v in zip(samples, verdicts, strict=True)]
    res = EvalResult(figures, prows, sample_rows, settings, str(out))
    write(res, out)
    return res


def _note_model_change(out: Path, model: str, ident: dict) -> None:
    """Say so when `out` holds an evaluation of other weights: those samples are kept but not scored."""
    from distill.console import console

    p = out / "eval.json"
    if not p.is_file():
        return
    try:
        before = json.loads(p.read_text())["settings"].get("model_identity") or {}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return
    if before.get("key") and before["key"] != ident["key"]:
        console.print(f"[yellow]note:[/] {out} holds an evaluation of {before['key']}; {model} is now "
                      f"{ident['key']} (its weights, tokenizer or template changed): generating and scoring "
                      "new samples; the old ones stay in the store but are not counted")


def write(res: EvalResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"settings": res.settings, "figures": res.figures, "problems": res.problems,
                               "samples": res.samples}, indent=1, ensure_ascii=False))
    os.replace(tmp, path)  # an interrupted write leaves the previous eval.json whole
    plot_pass_at_k(res, out / "eval.png")


def plot_pass_at_k(res: EvalResult, path: Path) -> None:
    """pass@k against k with intervals, and cons@k beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(n.split("@")[1]) for n in res.figures if n.startswith("pass@")]
    if not ks:
        return
    f = [res.figures[f"pass@{k}"] for k in ks]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    m = np.array([x["value"] for x in f])
    ax.errorbar(ks, m, yerr=[m - np.array([x["low"] for x in f]), np.array([x["high"] for x in f]) - m],
                marker="o", capsize=3, label="pass@k")
    k = res.settings["k"]
    cons = res.figures.get(f"cons@{k}")
    if cons:
        ax.errorbar([k], [cons["value"]], yerr=[[cons["value"] - cons["low"]], [cons["high"] - cons["value"]]],
                    marker="s", capsize=3, color="C3", label=f"cons@{k}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"share of problems ({int(res.settings['confidence'] * 100)}% CI)")
    ax.set_title(f"{Path(str(res.settings['model'])).name} on {res.settings['benchmark']}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "eval.json"
    if not p.is_file():
        raise EvalError(f"{p}: no eval.json here; give the file or the directory `distill eval --out` wrote")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise EvalError(f"{p}: not valid JSON ({e}); rerun the evaluation to rewrite it") from None
    if not isinstance(d, dict) or "problems" not in d or "settings" not in d:
        raise EvalError(f"{p}: not an eval.json written by distill eval (no settings/problems)")
    d["_path"] = str(p)
    return d


def compare(a_path: str | Path, b_path: str | Path, reps: int = 2000, confidence: float = 0.95,
            seed: int = 0) -> dict:
    """a - b on the problems both runs scored, per figure, with a paired bootstrap interval over problems."""
    a, b = load(a_path), load(b_path)
    pa = {r["id"]: r for r in a["problems"]}
    pb = {r["id"]: r for r in b["problems"]}
    common = [i for i in pa if i in pb]
    if not common:
        raise EvalError(f"{a['_path']} and {b['_path']} share no problem ids: a paired comparison needs the "
                        "same benchmark")
    warnings = []
    if len(common) < max(len(pa), len(pb)):
        warnings.append(f"only the {len(common)} problems both runs scored are compared "
                        f"({len(pa)} in a, {len(pb)} in b)")
    sa, sb = a["settings"], b["settings"]
    for key in ("k", "sampling", "prompt", "source"):
        va, vb = sa.get(key), sb.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            va = {x: y for x, y in va.items() if x not in ("n", "seed")}
            vb = {x: y for x, y in vb.items() if x not in ("n", "seed")}
        if va != vb:
            warnings.append(f"settings differ in {key}: {va!r} vs {vb!r}")
    names = [n for n in (a.get("figures") or {}) if n in (b.get("figures") or {})]
    figs = {}
    for name in names:
        xs = [(pa[i].get(name), pb[i].get(name)) for i in common]
        xs = [(x, y) for x, y in xs if x is not None and y is not None]
        if xs:
            figs[name] = paired_bootstrap([x for x, _ in xs], [y for _, y in xs], reps, confidence, seed)
    return {"a": a["_path"], "b": b["_path"], "a_model": sa.get("model"), "b_model": sb.get("model"),
            "benchmark": sa.get("benchmark"), "problems": len(common), "confidence": confidence,
            "figures": figs, "warnings": warnings}


def compare_table(c: dict) -> Table:
    conf = int(round(c["confidence"] * 100))
    t = Table(title=f"a = {c['a_model']}  vs  b = {c['b_model']}  on {c['benchmark']} ({c['problems']} paired problems)")
    for col in ("figure", "a", "b", "a - b", f"{conf}% CI (paired)", "P(other sign)"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for name, f in c["figures"].items():
        scale, fmt = (1, "{:.1f}") if name == "mean_tokens" else (100, "{:.1f}")
        sig = f["low"] > 0 or f["high"] < 0
        diff = fmt.format(scale * f["diff"])
        t.add_row(name, fmt.format(scale * f["a"]), fmt.format(scale * f["b"]),
                  f"[bold]{diff}[/]" if sig else diff,
                  f"[{fmt.format(scale * f['low'])}, {fmt.format(scale * f['high'])}]", f"{f['p_sign']:.3f}")
    return t


def default_out(model: str, benchmark: str, k: int) -> Path:
    """runs/eval/<name>-<hash of the model's absolute path>-<benchmark>-k<k>: `runs/a/student` and
    `runs/b/student` never share a directory (a hub id or `embedded` is its own name)."""
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"
    where = Path(model).expanduser()
    if where.exists():
        slug += "-" + hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:8]
    bench = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(benchmark).stem)
    return Path("runs") / "eval" / f"{slug}-{bench}-k{k}"


def student_prompt(model: str) -> dict | None:
    """The prompt section a distill-trained student was trained with (its train_summary.json), if any."""
    p = Path(model) / "train_summary.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())["recipe"]["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


__all__ = ["DataError", "EvalError", "EvalResult", "RecipeError", "bootstrap_ci", "compare", "evaluate", "majority",
           "paired_bootstrap", "pass_at_k", "resolve_benchmark"]
