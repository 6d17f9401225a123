"""SFT throughput: training tokens/s and the share of padding, packed versus padded, full versus LoRA.

    python benchmarks/train_throughput.py --data runs/quick/filtered [--steps 8] [--configs packed,padded,lora]
    python benchmarks/train_throughput.py --data D --model random:qwen2.5-1.5b --dtype bfloat16   # on a GPU

Each configuration runs the recipe's trainer (recipes/quickstart.yaml's train section unless --recipe)
for --steps optimizer steps after one warm-up step. tokens/s counts real tokens (prompt and answer,
not padding) per second of training; padding share = padded positions / all positions the model ran.
`random:qwen2.5-1.5b` builds a randomly initialised model of Qwen2.5-1.5B's shape from a config
(no download), with the embedded tokenizer. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_recipe  # noqa: E402
from distill.models import resolve_model  # noqa: E402
from distill.train.sft import build_trainer, load_tokenizer, prepare  # noqa: E402

CONFIGS = {
    "packed": {"train.packing": True},
    "padded": {"train.packing": False},
    "lora": {"train.packing": True, "train.lora.enabled": True, "train.learning_rate": 2e-4},
    "padded-lora": {"train.packing": False, "train.lora.enabled": True, "train.learning_rate": 2e-4},
}


def random_model(shape: str, tok_dir: str, dest: Path) -> str:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    assert shape == "qwen2.5-1.5b", shape
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                      num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def measure(recipe, model_path: str, data: str, steps: int, out: Path) -> dict:
    import torch

    tok = load_tokenizer(model_path, recipe.train)
    ds, _, counts = prepare(recipe, data, tok, show_preflight=False)
    trainer = build_trainer(recipe, model_path, ds, tok, out)
    real = total = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i >= steps + 1:
            break
        if i == 0:
            continue
        ids = batch["input_ids"]
        total += ids.numel()
        if "attention_mask" in batch:
            real += int(batch["attention_mask"].sum())
        else:  # padding-free rows: only trailing pad_to_multiple_of padding, marked by position 0 runs
            real += ids.numel()
    trainer.args.max_steps = 1
    trainer.train()  # warm-up step (allocator, kernels)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.args.max_steps = steps + 1
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=None)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    # the second train() restarts the schedule and runs steps + 1 steps; count them all
    per_step_real = real / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"steps": steps + 1, "seconds": secs, "tokens_per_s": per_step_real * (steps + 1) / secs,
            "padding": 1 - real / total if total else 0.0, "tokens_per_step": per_step_real, "peak_gib": peak,
            "examples": counts["examples"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipe", default=str(ROOT / "recipes/quickstart.yaml"))
    ap.add_argument("--model", default="embedded", help="a model reference, or random:qwen2.5-1.5b")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=None, help="override train.per_device_batch_size")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--configs", default="packed,padded,lora")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if model.startswith("random:"):
            model = random_model(model.split(":", 1)[1], resolve_model("embedded").path, Path(tmp) / "random")
        else:
            model = resolve_model(model).path
        print(f"model {a.model}  device {'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
              f"  threads {torch.get_num_threads()}  steps {a.steps}")
        print("| config | dtype | batch x max_length | tokens/step | padding | tokens/s | peak GPU GiB |")
        print("|---|---|---|---|---|---|---|")
        for name in a.configs.split(","):
            sets = {"train.model": model, "train.dtype": a.dtype, "train.save_strategy": "no",
                    "train.logging_steps": 1000, **CONFIGS[name]}
            if a.batch:
                sets["train.per_device_batch_size"] = a.batch
            if a.max_length:
                sets["train.max_length"] = a.max_length
            r = load_recipe(a.recipe, [f"{k}={v}" for k, v in sets.items()] + a.set)
            m = measure(r, model, a.data, a.steps, Path(tmp) / name)
            peak = "-" if m["peak_gib"] is None else f"{m['peak_gib']:.1f}"
            print(f"| {name} | {r.train.dtype} | {r.train.per_device_batch_size} x {r.train.max_length} | "
                  f"{m['tokens_per_step']:.0f} | {m['padding']:.1%} | {m['tokens_per_s']:.0f} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
