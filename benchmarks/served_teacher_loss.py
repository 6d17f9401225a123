"""The served teacher's loss against the in-process teacher's, on one fixed batch.

    vllm serve <teacher dir> --served-model-name teacher --dtype float32 --max-logprobs -1 --port 8011
    python benchmarks/served_teacher_loss.py --url http://127.0.0.1:8011 --teacher <teacher dir>

The student (the teacher's weights plus seeded noise, so the two differ) and the teacher both in fp32; a fixed batch
of quickstart prompts with fixed completions. For each beta (0 forward KL, 0.5, 1 reverse KL) it prints the
in-process teacher's loss (TRL's DistillationTrainer._compute_loss) and the served teacher's, and the cosine and
norm ratio of their gradients with respect to the student, (the same trainer
class, `onpolicy.teacher_servers`) for the whole vocabulary (k = -1) and for top-k supports with and without the
tail bucket, with the difference to the in-process loss. tests/test_vllm.py asserts the whole-vocabulary rows;
docs/benchmarks.md records the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

COMPLETIONS = ["The answer is 12.", "6 + 6 = 12, so the answer is 12.", "Let me add: 5 + 2 = 7. The answer is 7.",
               "I think it is 9."]
BETAS = (0.0, 0.5, 1.0)


def _recipe(teacher: str, served: dict | None):
    from distill.config import load_recipe

    over = {"onpolicy.teacher": teacher, "onpolicy.model": teacher, "onpolicy.dtype": "float32",
            "onpolicy.teacher_dtype": "float32", "onpolicy.lmbda": 1.0, "onpolicy.check_memory": False,
            "problems.count": 4, "onpolicy.per_device_batch_size": 4}
    if served:
        over |= {"onpolicy.teacher_servers": [{"name": "teacher", "url": served["url"], "model": served["model"]}],
                 "onpolicy.teacher_top_k": served["k"], "onpolicy.teacher_tail": served["tail"]}
    root = Path(__file__).resolve().parents[1]
    return load_recipe(root / "recipes/onpolicy/quickstart.yaml", overrides=[f"{k}={json.dumps(v)}" for k, v in over.items()])


def _batch(tok, ds):
    """Left-padded prompts and right-padded completions, as TRL's generation batch holds them."""
    import torch

    prompts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
               for r in ds]
    comps = [tok(c, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")] for c in COMPLETIONS]
    P, C = max(map(len, prompts)), max(map(len, comps))
    pad = tok.pad_token_id or 0
    pi = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    pm = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    ci = torch.tensor([c + [pad] * (C - len(c)) for c in comps])
    cm = torch.tensor([[1] * len(c) + [0] * (C - len(c)) for c in comps])
    return {"prompt_ids": pi, "prompt_mask": pm, "completion_ids": ci, "completion_mask": cm}


def compare(url: str, teacher: str, model: str = "teacher", supports=((-1, False), (8, True), (8, False), (1, True),
                                                                        (1, False)), noise: float = 0.02) -> list[dict]:
    """Rows {beta, k, tail, in_process, served, diff}: the losses of one fixed batch (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import resolve_model
    from distill.train.grpo import build_dataset
    from distill.train.onpolicy import build_trainer, preflight

    path = resolve_model(teacher).path
    student = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    rows, tmp = [], Path(tempfile.mkdtemp(prefix="served-loss-"))
    base = _recipe(teacher, None)
    pair, tok = preflight(base)
    ds, _ = build_dataset(base, tok, stage="onpolicy")
    batch = _batch(tok, ds)
    inproc = build_trainer(base, pair, ds, tok, tmp / "in", student=student)
    unwrapped = inproc.accelerator.unwrap_model(inproc.model)
    params = [p for p in student.parameters() if p.requires_grad]

    def loss_and_grad(trainer, inputs, beta):
        """The loss and its gradient with respect to the student (flattened)."""
        trainer.beta = beta
        student.zero_grad(set_to_none=True)
        loss = trainer._compute_loss(trainer.accelerator.unwrap_model(trainer.model), inputs, None)[0]
        loss.backward()
        return loss.item(), torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).clone()

    ref = {beta: loss_and_grad(inproc, dict(batch), beta) for beta in BETAS}
    del unwrapped
    for k, tail in supports:
        r = _recipe(teacher, {"url": url, "model": model, "k": k, "tail": tail})
        spair, _ = preflight(r)
        tr = build_trainer(r, spair, ds, tok, tmp / f"k{k}{tail}", student=student)
        inputs = dict(batch)
        tr._attach_teacher(list(ds), inputs)
        for beta in BETAS:
            got, grad = loss_and_grad(tr, inputs, beta)
            a, b = grad.double(), ref[beta][1].double()  # fp32 sums over 1e8 entries drift past 1
            cos = (a @ b / (a.norm() * b.norm())).item()
            rows.append({"beta": beta, "k": k, "tail": tail and k != -1, "in_process": ref[beta][0], "served": got,
                         "diff": got - ref[beta][0], "grad_cosine": cos,
                         "grad_norm_ratio": (a.norm() / b.norm()).item()})
        spair.served.close()
    return rows


def table(rows: list[dict]) -> str:
    out = ["| beta | teacher support | in-process loss | served loss | served - in-process | relative | gradient cosine "
           "| gradient norm ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sup = "whole vocabulary" if r["k"] == -1 else f"top-{r['k']} + sampled" + (" + tail" if r["tail"] else ", no tail")
        rel = r["diff"] / r["in_process"] if r["in_process"] else float("nan")
        out.append(f"| {r['beta']} | {sup} | {r['in_process']:.6f} | {r['served']:.6f} | {r['diff']:+.2e} | {rel:+.1e} | "
                   f"{r['grad_cosine']:.5f} | {r['grad_norm_ratio']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8011")
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--model", default="teacher", help="the served model name")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--table", help="only print the table of rows written earlier with --json")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return
    rows = compare(a.url, a.teacher, a.model)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
