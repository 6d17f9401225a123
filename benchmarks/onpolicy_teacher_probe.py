"""Why an on-policy student can fail to learn a teacher's format: the two models' next-token probabilities at
the places that decide it (the first token of the answer, and the token after a plain answer), side by side.

    python benchmarks/onpolicy_teacher_probe.py --teacher runs/quick/student --student embedded

Prints a table: for each context, the teacher's top tokens with their probabilities, and the student's
probability of each. docs/benchmarks.md ("On-policy distillation on CPU") quotes it.
"""

from __future__ import annotations

import argparse


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import resolve_model
    from distill.train.common import load_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="runs/quick/student")
    ap.add_argument("--student", default="embedded")
    ap.add_argument("--problem", default="What is 5 + 8?")
    ap.add_argument("--plain-answer", default="5 + 8 = 13.")
    ap.add_argument("--top", type=int, default=4)
    a = ap.parse_args()
    tp, sp = resolve_model(a.teacher).path, resolve_model(a.student).path
    tok = load_tokenizer(tp)
    teacher = AutoModelForCausalLM.from_pretrained(tp).eval()
    student = AutoModelForCausalLM.from_pretrained(sp).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": a.problem}], add_generation_prompt=True, tokenize=False)
    contexts = {"first token of the answer": prompt, f"after the plain answer {a.plain_answer!r}": prompt + a.plain_answer}
    print("| context | token | teacher p | student p |\n|---|---|---|---|")
    for name, text in contexts.items():
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            pt = teacher(ids).logits[0, -1].softmax(-1)
            ps = student(ids).logits[0, -1].softmax(-1)
        eot = tok.convert_tokens_to_ids("<|im_end|>")
        shown = list(pt.topk(a.top).indices.tolist())
        if eot is not None and eot not in shown:
            shown.append(eot)
        for i in shown:
            print(f"| {name} | {tok.decode([i])!r} | {pt[i].item():.3f} | {ps[i].item():.3f} |")


if __name__ == "__main__":
    main()
