"""Vote labels against the real answers: filter a run's samples with their gold answers, then again with
every gold removed (the problems labeled by the majority answer of their samples, filter.correct.vote),
and compare.

    python benchmarks/vote_labels.py --in runs/quick/samples --recipe recipes/quickstart.yaml

Prints a table: problems labeled by vote and how many labels equal the real answer (by the verifier);
samples kept with golds and with votes, and how many of the vote-kept samples are correct by the real
gold (the precision of what is kept). Work files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from distill.config import load_recipe
from distill.filter import filter_samples, iter_records
from distill.verify.answer import check_answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="inp", required=True, help="a sample store or JSONL of samples with gold answers")
    ap.add_argument("--recipe", default="recipes/quickstart.yaml", help="the filter settings to use")
    ap.add_argument("--set", action="append", default=[], help="recipe overrides, e.g. filter.correct.vote.min_share=0.6")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, args.set)
    cfg = recipe.filter

    work = Path(tempfile.mkdtemp(prefix="vote-labels-"))
    gold: dict[str, str] = {}
    with open(work / "no_gold.jsonl", "w") as f:
        for s in iter_records(args.inp):
            gold.setdefault(s["problem_id"], s["answer"])
            f.write(json.dumps({**s, "answer": None}, ensure_ascii=False) + "\n")

    with_gold = filter_samples(args.inp, work / "with_gold", cfg, recipe.export, progress=False)
    with_vote = filter_samples(work / "no_gold.jsonl", work / "with_vote", cfg, recipe.export, progress=False)

    labels: dict[str, str] = {}
    for name in ("kept.jsonl", "rejected.jsonl"):
        for line in open(work / "with_vote" / name):
            r = json.loads(line)
            c = r["verdicts"]["correct"]["value"]
            if isinstance(c, dict) and c.get("tier") == "vote" and c.get("status") in ("correct", "wrong", "no_answer"):
                labels[r["problem_id"]] = c["gold"]
    agree = sum(check_answer(gold[p], f"\\boxed{{{lab}}}")["status"] == "correct" for p, lab in labels.items())

    kept_gold = {json.loads(x)["key"] for x in open(work / "with_gold" / "kept.jsonl")}
    kept_vote = [json.loads(x) for x in open(work / "with_vote" / "kept.jsonl")]
    right = [k for k in kept_vote if k["key"] in kept_gold]
    # a vote-kept sample is correct by the real gold when the gold run kept it, or judged it correct
    # and rejected it for another reason (no other check differs between the two runs)
    gold_correct = set()
    for name in ("kept.jsonl", "rejected.jsonl"):
        for line in open(work / "with_gold" / name):
            r = json.loads(line)
            if r["verdicts"]["correct"]["pass"]:
                gold_correct.add(r["key"])
    precise = sum(k["key"] in gold_correct for k in kept_vote)
    v = with_vote["vote"]
    rows = [
        ("problems", len(gold), ""),
        ("labeled by vote", v["labeled"], f"{v['unlabeled']} unlabeled"),
        ("labels equal to the real answer", agree, f"{agree / max(1, len(labels)):.1%} of labeled"),
        ("samples kept with golds", with_gold["kept"], ""),
        ("samples kept with vote labels", with_vote["kept"], f"{len(right)} of them also kept with golds"),
        ("vote-kept samples correct by the real gold", precise, f"{precise / max(1, len(kept_vote)):.1%}"),
    ]
    print(f"input: {args.inp}  (min_share {cfg.correct.vote.min_share}, min_count {cfg.correct.vote.min_count})")
    print(f"| {'':45} | {'count':>6} | note |")
    print(f"|{'-' * 47}|{'-' * 8}|------|")
    for name, n, note in rows:
        print(f"| {name:45} | {n:>6} | {note} |")


if __name__ == "__main__":
    main()
