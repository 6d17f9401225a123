"""GPU memory each SFT recipe needs, from the students' published shapes (no weights loaded).

    python benchmarks/sft_memory.py            # prints the table in docs/training.md

Model state per parameter, mixed precision as DeepSpeed and FSDP do it: bf16 weights (2 bytes),
bf16 gradients (2), fp32 master weights and the two AdamW moments (12): 16 bytes. Sharding:
DDP keeps all of it on every GPU; ZeRO-2 shards gradients and optimizer (2 + 14/N); ZeRO-3 and
FSDP2 shard everything (16/N). LoRA: the frozen bf16 base (2 bytes/param, sharded by ZeRO-3 when
used) plus the adapter's full state.
Activations per GPU with gradient checkpointing, one packed row of max_length tokens: the saved
input of every layer (L x h x 2 bytes) plus one layer being recomputed (about L x (6h + 4i) x 2
bytes with FlashAttention/varlen, which keep no L x L matrix). The loss: TRL 1.16 computes it in
tiles of 4,096 tokens x 32,768 vocabulary entries (a bf16 product and an fp32 accumulator, 6 bytes
an entry) without the whole L x vocab logits; the hidden states it scores (rows x L x h, bf16) and
their gradient are counted with the tile. Add 15% for the CUDA context, NCCL buffers and fragmentation.
Sequence parallelism over S GPUs (train.sequence_parallel, DeepSpeed Ulysses): each GPU keeps the
activations and scores the loss of L/S tokens of the row; its attention, after the all-to-all, runs
over all L tokens for heads/S heads, the same bytes as L/S tokens with all heads. ZeRO-3 still shards
the model state over all N GPUs (DeepSpeed treats the sequence-parallel ranks as data-parallel ones
for sharding). Not counted: the all-to-all buffers (a few q/k/v slices of one layer).
Computed, not measured: the measured single-GPU figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_recipe  # noqa: E402

GB = 1e9


@dataclass
class Shape:  # from each model's config.json on the Hub
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool
    qkv_bias: bool

    def params(self) -> float:
        hd = self.hidden // self.heads
        attn = self.hidden * self.hidden * 2 + 2 * self.hidden * self.kv_heads * hd
        if self.qkv_bias:
            attn += self.hidden + 2 * self.kv_heads * hd
        mlp = 3 * self.hidden * self.intermediate
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return emb + self.layers * (attn + mlp + 2 * self.hidden) + self.hidden


SHAPES = {
    "Qwen/Qwen2.5-Math-1.5B": Shape(1536, 28, 8960, 151936, 12, 2, True, True),
    "Qwen/Qwen2.5-Math-7B": Shape(3584, 28, 18944, 152064, 28, 4, False, True),
    "Qwen/Qwen2.5-14B": Shape(5120, 48, 13824, 152064, 40, 8, False, True),
    "Qwen/Qwen2.5-32B": Shape(5120, 64, 27648, 152064, 40, 8, False, True),
    "meta-llama/Llama-3.1-8B": Shape(4096, 32, 14336, 128256, 32, 8, False, False),
    "meta-llama/Llama-3.3-70B-Instruct": Shape(8192, 80, 28672, 128256, 64, 8, False, False),
}

# The layout each recipe is meant for (its header comment): GPUs and the sharding.
LAYOUTS = {
    "qwen2.5-math-1.5b.yaml": (8, "zero2"),
    "qwen2.5-math-7b.yaml": (8, "zero3"),
    "qwen2.5-14b.yaml": (8, "zero3"),
    "qwen2.5-32b.yaml": (16, "zero3"),
    "llama3.1-8b.yaml": (8, "zero3"),
    "llama3.3-70b-instruct.yaml": (32, "zero3"),
    "llama3.3-70b-instruct-lora.yaml": (8, "zero3"),
    "qwen2.5-14b-32k-sp.yaml": (8, "zero3"),
    "qwen2.5-32b-32k-sp.yaml": (16, "zero3"),
    "llama3.3-70b-instruct-32k-sp.yaml": (32, "zero3"),
}


def state_bytes(p: float, n: int, sharding: str) -> float:
    if sharding == "ddp":
        return 16 * p
    if sharding == "zero2":
        return 2 * p + 14 * p / n
    return 16 * p / n


def activation_bytes(s: Shape, length: int, rows: int) -> float:
    saved = s.layers * length * s.hidden * 2
    working = length * (6 * s.hidden + 4 * s.intermediate) * 2
    return rows * (saved + working)


def loss_bytes(s: Shape, length: int, rows: int) -> float:
    tile = 4096 * min(32768, s.vocab) * 6
    return tile + 2 * rows * length * s.hidden * 2


def lora_params(s: Shape, r: int) -> float:
    hd = s.hidden // s.heads
    per_layer = (r * (s.hidden + s.hidden) * 2  # q, o
                 + 2 * r * (s.hidden + s.kv_heads * hd)  # k, v
                 + 3 * r * (s.hidden + s.intermediate))  # gate, up, down
    return s.layers * per_layer


def rows() -> list[list[str]]:
    out = []
    for path in sorted((ROOT / "recipes/sft").glob("*.yaml")):
        t = load_recipe(path).train
        s = SHAPES[t.model]
        p = s.params()
        n, sharding = LAYOUTS[path.name]
        if t.lora.enabled:
            lp = lora_params(s, t.lora.r)
            weights = 2 * p / n if sharding == "zero3" else 2 * p
            opt = 16 * lp
            model_state = weights + opt
            grads_opt = f"{opt / GB:.1f} (adapter {lp / 1e6:.0f}M)"
        else:
            model_state = state_bytes(p, n, sharding)
            grads_opt = f"{(model_state - 2 * p / (n if sharding == 'zero3' else 1)) / GB:.1f}"
        weights_gb = 2 * p / (n if sharding == "zero3" else 1) / GB
        sp = t.sequence_parallel
        act = activation_bytes(s, t.max_length // sp, t.per_device_batch_size)
        loss = loss_bytes(s, t.max_length // sp, t.per_device_batch_size)
        total = (model_state + act + loss) * 1.15
        out.append([path.name, f"{p / 1e9:.2f}B", f"{n} x 80 GB, {sharding}{' + LoRA' if t.lora.enabled else ''}",
                    f"{weights_gb:.1f}", grads_opt, f"{act / GB:.1f} ({t.per_device_batch_size} x {t.max_length}"
                    + (f" / SP {sp})" if sp > 1 else ")"),
                    f"{loss / GB:.1f}",
                    f"{total / GB:.0f}", "yes" if total <= 80 * GB else "NO"])
    return out


def main() -> None:
    head = ["recipe", "params", "layout", "weights/GPU GB", "grads+optimizer/GPU GB", "activations/GPU GB (rows x len)",
            "loss tiles + scored states GB",
            "total/GPU GB (+15%)", "fits 80 GB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows():
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
