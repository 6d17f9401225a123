"""Answer-equivalence agreement: distill's verifier against raw math-verify on a labelled table.

The table (`tests/data/answer_equivalence.jsonl`) holds pairs of a gold answer and what a model
wrote in its final part, each labelled equivalent or not, with the category and the public grader
or benchmark format the case follows. For every pair this prints whether each verifier agrees with
the label, and per category and overall: agreement, false accepts (a non-equivalent pair judged
correct) and false rejects. Raw math-verify is `verify(parse(gold), parse(pred))` with its default
extraction configs; the gold is given as `$gold$` (math-verify's LaTeX extraction needs
delimiters), which is the most favourable of the obvious ways to hand it a bare gold. Run:

    python benchmarks/verifier_agreement.py [--table tests/data/answer_equivalence.jsonl] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "answer_equivalence.jsonl"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


def gold_health(directory: Path) -> list[tuple[str, int, int, list[str]]]:
    """(set, golds, unparseable, examples) for every <set>.jsonl: a gold no reading of which
    math-verify parses can never be matched, so every sample of its problem fails."""
    from distill.verify.answer import check_answer

    out = []
    for f in sorted(directory.glob("*.jsonl")):
        golds = [str(json.loads(x)["answer"]) for x in f.read_text().splitlines() if x.strip()]
        # Any boxed prediction makes check_answer parse the gold first; its status says if it read.
        bad = [g for g in golds if check_answer(g, "\\boxed{0}")["status"] == "gold_unparseable"]
        out.append((f.stem, len(golds), len(bad), bad[:5]))
    return out


def raw_math_verify(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(pred)))
    except Exception:  # noqa: BLE001 - a crash is a reject for the raw baseline
        return False


def distill_verifier(gold: str, pred: str) -> bool:
    from distill.verify import check_answer

    return check_answer(gold, pred)["status"] == "correct"


def load(path: Path) -> list[dict]:
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                r = json.loads(line)
                missing = {"gold", "pred", "equivalent"} - set(r)
                if missing:
                    raise SystemExit(f"{path} line {n}: missing {sorted(missing)}")
                rows.append(r)
    return rows


def measure(rows: list[dict]) -> dict:
    """{'overall': {name: counts}, 'categories': {cat: {name: counts}}, 'misses': {name: [rows]}}."""
    judges = {"raw math-verify": raw_math_verify, "distill": distill_verifier}
    zero = {"n": 0, "agree": 0, "false_accept": 0, "false_reject": 0}
    overall = {k: dict(zero) for k in judges}
    cats: dict = defaultdict(lambda: {k: dict(zero) for k in judges})
    misses: dict = {k: [] for k in judges}
    for r in rows:
        for name, fn in judges.items():
            got = fn(r["gold"], r["pred"])
            for bucket in (overall[name], cats[r.get("category", "-")][name]):
                bucket["n"] += 1
                bucket["agree"] += got == r["equivalent"]
                bucket["false_accept"] += got and not r["equivalent"]
                bucket["false_reject"] += (not got) and r["equivalent"]
            if got != r["equivalent"]:
                misses[name].append(r)
    return {"overall": overall, "categories": dict(cats), "misses": misses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--show-misses", action="store_true", help="print every pair a verifier gets wrong")
    ap.add_argument("--golds", type=Path, default=SHARED, help="benchmark sets whose golds to parse (a directory)")
    a = ap.parse_args()
    rows = load(a.table)
    m = measure(rows)
    print(f"table: {a.table.name}, {len(rows)} pairs ({sum(r['equivalent'] for r in rows)} equivalent); "
          f"python {platform.python_version()}, {platform.machine()}")
    print()
    print("| category | pairs | raw math-verify agree | raw false accepts | distill agree | distill false accepts |")
    print("|---|---|---|---|---|---|")
    for cat, d in sorted(m["categories"].items()):
        raw, ours = d["raw math-verify"], d["distill"]
        print(f"| {cat} | {raw['n']} | {raw['agree']}/{raw['n']} | {raw['false_accept']} | "
              f"{ours['agree']}/{ours['n']} | {ours['false_accept']} |")
    raw, ours = m["overall"]["raw math-verify"], m["overall"]["distill"]
    print(f"| **all** | {raw['n']} | **{100 * raw['agree'] / raw['n']:.1f}%** | {raw['false_accept']} | "
          f"**{100 * ours['agree'] / ours['n']:.1f}%** | {ours['false_accept']} |")
    print()
    for name, c in m["overall"].items():
        print(f"{name}: agreement {100 * c['agree'] / c['n']:.1f}% ({c['agree']}/{c['n']}), "
              f"false accepts {c['false_accept']}, false rejects {c['false_reject']}")
    if a.golds.is_dir():
        print(f"\ngold health ({a.golds}):\n")
        print("| set | golds | unparseable | examples |")
        print("|---|---|---|---|")
        for name, n, bad, ex in gold_health(a.golds):
            print(f"| {name} | {n} | {bad} | {', '.join(f'`{e}`' for e in ex) or '-'} |")
    if a.show_misses:
        for name, rs in m["misses"].items():
            print(f"\n{name} disagrees with the label on:")
            for r in rs:
                print(f"  [{'equiv' if r['equivalent'] else 'not  '}] gold={r['gold']!r}  pred={r['pred']!r}")


if __name__ == "__main__":
    main()
