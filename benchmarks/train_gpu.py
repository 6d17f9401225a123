"""Training speed on one GPU (or a toy size on CPU): tokens/s, MFU and peak memory of `distill train`'s
SFT trainer, and GRPO steps/s, on randomly initialised models of the students' published shapes.

    python benchmarks/train_gpu.py                                   # CPU: toy shape, prints the table
    python benchmarks/train_gpu.py --runs 1.5b:8192:1,1.5b:32768:2,7b:8192:1:lora=1,grpo:1.5b   # one H100
    python benchmarks/train_gpu.py --runs 1.5b:8192:1:attn=sdpa,ckpt=1 --profile                  # where time goes

A run is SHAPE:MAX_LENGTH:MICRO_BATCH[:key=value,...] with keys attn (auto, sdpa, varlen,
flex_attention, flash_attention_2), ckpt (auto, 0, 1 or a share of layers), liger (auto, 0, 1),
lora (0/1), ga (gradient accumulation steps; tokens/s and MFU are then per optimizer
step, optimizer included); or grpo:SHAPE for GRPO steps with transformers generation. The trainer is the one
`distill train` builds (distill.train.sft.build_trainer) with the 1.5B SFT recipe's settings; the
data are synthetic R1-like traces: a 100-token prompt (masked) and a completion whose length is
lognormal with a median of 3,000 tokens, packed by TRL's best-fit decreasing into MAX_LENGTH rows
(MICRO_BATCH rows a step).

MFU = model FLOPs / time / peak, with model FLOPs per step = 6 N T + 6 n_layers d_attn sum(l_i^2):
N the parameters that take part in matrix products (the input embedding is a lookup: counted only
when tied to the LM head), T the tokens of the step, l_i the length of each packed document (causal
attention: QK^T and AV, forward + backward). Recomputation by activation checkpointing is not
counted (it is not model work). LoRA: 4 N per token for the frozen base (forward, and backward to the
inputs only) plus 6 per trainable parameter. Peak: 989 TFLOP/s dense bf16 for an H100 SXM (--peak to change).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_recipe  # noqa: E402

# Published shapes (config.json of each model on the Hub).
SHAPES = {
    "toy": dict(arch="qwen2", vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(arch="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
}


def build_model(shape: str, device: str, dtype, min_vocab: int = 0):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    s = dict(SHAPES[shape])
    arch = s.pop("arch")
    s["vocab_size"] = max(s["vocab_size"], min_vocab)  # the toy shape must still hold the tokenizer's ids
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    cfg = cls(max_position_embeddings=32768, rope_theta=300000.0, **s)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


def matmul_params(model) -> int:
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is emb
    return n if tied else n - emb.numel()


def synthetic(vocab: int, max_length: int, rows: int, seed: int = 0):
    """Tokenized examples whose lengths look like R1 traces, enough to fill `rows` packed rows."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    out, total = [], 0
    while total < rows * max_length * 1.05:
        n = int(min(max(rng.lognormvariate(math.log(3000), 0.7), 200), max_length - 120))
        if max_length < 4096:  # toy sizes: scale the traces down with the rows
            n = max(8, n * max_length // 32768)
        p = 100 if max_length >= 4096 else 8
        ids = [rng.randrange(10, vocab) for _ in range(p + n)]
        out.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
        total += p + n
    return Dataset.from_list(out)


class Clock:
    """A TrainerCallback timing each optimizer step (synchronised), plus a collator wrapper counting tokens."""

    def __init__(self, cuda: bool):
        from transformers import TrainerCallback

        self.cuda, self.times, self.batches = cuda, [], []
        clock = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                clock._sync()
                clock.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                clock._sync()
                clock.times.append(time.perf_counter() - clock.t0)

        self.callback = _CB()

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, collate):
        def f(examples):
            batch = collate(examples)
            cu = batch.get("cu_seq_lens_q")
            if cu is not None:
                docs = (cu[1:] - cu[:-1]).tolist()
            elif "attention_mask" in batch:
                docs = batch["attention_mask"].sum(-1).tolist()
            else:
                docs = [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]
            self.batches.append(docs)
            return batch

        return f


def sft_run(spec: str, tok, device: str, steps: int, warmup: int, peak: float, profile: bool, check: bool,
            tmp: Path) -> dict:
    import torch

    from distill.train.sft import build_trainer

    parts = spec.split(":")
    shape, max_length, micro = parts[0], int(parts[1]), int(parts[2])
    opts = dict(kv.split("=") for kv in parts[3].split(",")) if len(parts) > 3 and parts[3] else {}
    cuda = device == "cuda"
    ga = int(opts.get("ga", 1))
    sets = {"train.max_length": max_length, "train.per_device_batch_size": micro,
            "train.gradient_accumulation_steps": ga, "train.save_strategy": "no", "train.logging_steps": 10**6,
            "train.report_to": "[]", "train.max_steps": warmup + steps, "train.warmup": 0,
            "train.attn_implementation": opts.get("attn", "auto"),
            "train.gradient_checkpointing": {"0": "false", "1": "true"}.get(opts.get("ckpt", "auto"),
                                                                            opts.get("ckpt", "auto")),
            "train.liger": {"0": "false", "1": "true"}.get(opts.get("liger", "auto"), "auto"),
            "train.dtype": "bfloat16" if cuda else "float32", "train.context.rope_theta": "null",
            "train.context.max_position_embeddings": "null"}
    lora = opts.get("lora") == "1"
    if lora:
        sets.update({"train.lora.enabled": "true", "train.lora.r": 64, "train.lora.alpha": 128,
                     "train.learning_rate": 1e-4})
    recipe = load_recipe(ROOT / "recipes/sft/qwen2.5-math-1.5b.yaml", [f"{k}={v}" for k, v in sets.items()])
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(shape, device, dtype)
    n_mm = matmul_params(model)
    layers, d_attn = model.config.num_hidden_layers, model.config.num_attention_heads * (
        model.config.hidden_size // model.config.num_attention_heads)
    ds = synthetic(model.config.vocab_size, max_length, micro * ga * (warmup + steps + 2))
    trainer = build_trainer(recipe, model, ds, tok, tmp / spec.replace(":", "_"))
    speed = trainer.distill_speed
    clock = Clock(cuda)
    trainer.data_collator = clock.wrap(trainer.data_collator)
    trainer.add_callback(clock.callback)
    loss_check = None
    if check:
        loss_check = compare_losses(trainer, speed.attn_implementation)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    prof = None
    if profile:
        from torch.profiler import ProfilerActivity, schedule
        from torch.profiler import profile as tprofile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        prof = tprofile(activities=acts, schedule=schedule(wait=0, warmup=warmup, active=min(steps, 3), repeat=1))
        from transformers import TrainerCallback

        class _Step(TrainerCallback):
            def on_step_end(self, *a, **k):
                prof.step()

        trainer.add_callback(_Step())
        prof.start()
    trainer.train()
    if prof is not None:
        prof.stop()
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    times = clock.times[warmup:]
    batches = clock.batches[warmup * ga:(warmup + len(times)) * ga]
    tokens = sum(sum(b) for b in batches)
    # LoRA: the frozen base does a forward (2N) and the backward to its inputs (2N), no weight gradients.
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    per_token = 6 * n_mm if not lora else 4 * n_mm + 6 * trainable
    flops = sum(per_token * sum(b) + 6 * layers * d_attn * sum(x * x for x in b) for b in batches)
    secs = sum(times)
    row = {"run": spec, "attention": f"{speed.attn_implementation} ({speed.attention_kernel})",
           "liger": speed.liger, "ckpt": checkpointed_share(trainer.model), "tokens_per_step": tokens / max(len(times), 1),
           "tokens_per_s": tokens / secs, "mfu": flops / secs / peak, "peak_gib": peak_gib,
           "docs_per_row": sum(len(b) for b in batches) / max(len(batches), 1) / micro, "loss_check": loss_check,
           "params": sum(p.numel() for p in model.parameters())}
    if prof is not None:
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=70))
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return row


def checkpointed_share(model) -> float:
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    return sum(bool(m.gradient_checkpointing) for m in layers) / max(len(layers), 1)


def compare_losses(trainer, fast: str) -> tuple[float, float]:
    """The loss of one collated packed batch with the dense-mask SDPA path and with the chosen path."""
    import torch

    model = trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
    out = {}
    model.eval()
    with torch.no_grad():
        for impl in ("sdpa", fast):
            model.set_attn_implementation(impl)
            out[impl] = float(model(**batch, use_cache=False, fused_lm_head=True).loss)
    model.set_attn_implementation(fast)
    model.train()
    return out["sdpa"], out[fast]


def grpo_run(shape: str, tok, device: str, steps: int, tmp: Path, completion: int) -> dict:
    import torch

    from distill.train.grpo import build_dataset, build_trainer

    cuda = device == "cuda"
    sets = {"grpo.max_steps": steps + 1, "grpo.save_strategy": "no", "grpo.report_to": "[]",
            "grpo.use_vllm": "false", "grpo.log_completions": "false", "grpo.logging_steps": 1,
            "grpo.max_completion_length": completion, "grpo.per_device_batch_size": 16,
            "grpo.gradient_accumulation_steps": 1, "grpo.num_generations": 8, "grpo.reward_workers": 2,
            "grpo.dtype": "bfloat16" if cuda else "float32", "grpo.warmup": 0,
            "problems": "{task: arithmetic, count: 64, seed: 0}"}
    recipe = load_recipe(ROOT / "recipes/grpo/qwen2.5-math-1.5b.yaml", [f"{k}={v}" for k, v in sets.items()])
    model = build_model(shape, device, torch.bfloat16 if cuda else torch.float32, min_vocab=len(tok))
    model.generation_config.eos_token_id = None  # a random model: generate the full length, as a worst case
    # saved, since GRPO's frozen reference (beta > 0) is loaded again from the policy's path
    path = tmp / f"policy-{shape}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    del model
    ds, _ = build_dataset(recipe, tok)
    trainer = build_trainer(recipe, str(path), ds, tok, tmp / "grpo")
    model = trainer.model
    clock = Clock(cuda)
    trainer.add_callback(clock.callback)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    for f in trainer.reward_funcs:
        if hasattr(f, "close"):
            f.close()
    times = clock.times[1:]
    secs = sum(times)
    completions = 16 * len(times)
    row = {"run": f"grpo:{shape}", "steps_per_s": len(times) / secs, "completions_per_s": completions / secs,
           "completion_tokens": completion, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "attention": trainer.args.model_init_kwargs and trainer.args.model_init_kwargs.get("attn_implementation")
           or model.config._attn_implementation}
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=None, help="comma-free list separated by spaces or ';' (see above)")
    ap.add_argument("--tokenizer", default="embedded", help="a tokenizer directory or model reference")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak", type=float, default=989e12, help="the device's dense bf16 FLOP/s")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table for each run")
    ap.add_argument("--check-loss", action="store_true", help="loss of one batch: dense-mask sdpa vs the chosen path")
    ap.add_argument("--grpo-completion", type=int, default=256)
    a = ap.parse_args()
    import torch
    from transformers import AutoTokenizer

    from distill.models import resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = a.runs or ("toy:512:1:ckpt=0;toy:512:2:ckpt=0;toy:512:1:attn=sdpa,ckpt=0" if device == "cpu"
                      else "1.5b:8192:1;1.5b:32768:2;7b:8192:1:lora=1;grpo:1.5b")
    steps = a.steps or (3 if device == "cpu" else 6)
    tok_path = a.tokenizer if Path(a.tokenizer).is_dir() else resolve_model(a.tokenizer).path
    tok = AutoTokenizer.from_pretrained(tok_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    import transformers
    import trl

    print(f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"{steps} timed steps after {a.warmup} warm-up")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in [r for r in runs.replace(" ", ";").split(";") if r]:
            try:
                if spec.startswith("grpo:"):
                    rows.append(grpo_run(spec.split(":")[1], tok, device, steps, Path(tmp), a.grpo_completion))
                else:
                    rows.append(sft_run(spec, tok, device, steps, a.warmup, a.peak, a.profile, a.check_loss, Path(tmp)))
            except torch.OutOfMemoryError as e:
                rows.append({"run": spec, "error": "out of memory: " + str(e).split("\n")[0][:80]})
                torch.cuda.empty_cache()
            print(rows[-1], flush=True)
    print()
    print("| run | attention | liger | checkpointed layers | tokens/step | docs/row | tokens/s | MFU | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['run']} | {r['error']} | | | | | | | |")
        elif r["run"].startswith("grpo:"):
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            print(f"| {r['run']} (2 x 8 completions of {r['completion_tokens']} tokens a step) | {r['attention']} | | | | "
                  f"| {r['steps_per_s']:.3f} steps/s, {r['completions_per_s']:.1f} completions/s | | {peak} |")
        else:
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            print(f"| {r['run']} | {r['attention']} | {'on' if r['liger'] else 'off'} | {r['ckpt']:.0%} | "
                  f"{r['tokens_per_step']:.0f} | {r['docs_per_row']:.1f} | {r['tokens_per_s']:.0f} | {r['mfu']:.1%} | {peak} |")
    checks = [r for r in rows if r.get("loss_check")]
    for r in checks:
        a_, b_ = r["loss_check"]
        print(f"loss of one packed batch, {r['run']}: dense-mask sdpa {a_:.5f}, chosen path {b_:.5f}, "
              f"|diff| {abs(a_ - b_):.2e}")


if __name__ == "__main__":
    main()
