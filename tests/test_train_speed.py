"""The training fast path (distill/train/attention.py, distill/train/common.py) on CPU: the attention
and checkpointing choices per install, equality with the dense-mask path, no L x L mask for packed
rows, and the loss mask of a collated batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.config import TrainConfig, load_recipe
from distill.train import attention
from distill.train.attention import choose, register
from distill.train.common import (
    activation_bytes_per_token_layer,
    auto_checkpoint_share,
    checkpoint_layers,
    choose_speed,
)
from distill.train.examples import TrainDataError

ROOT = Path(__file__).resolve().parents[1]


def tiny(arch: str = "qwen2", kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    kw = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=kv_heads)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def packed(lens, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, sum(lens)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    kw = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lens), max_length_k=max(lens))
    return ids, pos, kw


def logits(model, impl, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


# ----------------------------------------------------------------------------------------------
# what is chosen


def test_auto_picks_varlen_without_flash_attn_and_flash_attn_when_installed(monkeypatch):
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    c = choose("auto", "cpu", packing=True)
    assert c.implementation == "varlen" and "per document" in c.kernel
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: True)
    assert choose("auto", "cuda", packing=True).implementation == "flash_attention_2"
    # on a CPU flash-attn cannot run: still varlen
    assert choose("auto", "cpu", packing=True).implementation == "varlen"


def test_a_model_that_generates_never_gets_varlen(monkeypatch):
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    assert choose("auto", "cuda", packing=False, training_only=False).implementation == "sdpa"
    with pytest.raises(ValueError, match="training only"):
        choose("varlen", "cpu", packing=False, training_only=False)


def test_flash_attention_2_without_the_package_fails_with_the_fix(monkeypatch):
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    with pytest.raises(ImportError, match="pip install flash-attn"):
        choose("flash_attention_2", "cuda", packing=True)


def test_cuda_kernel_is_torch_varlen_when_torch_has_it():
    has = attention._torch_varlen() is not None
    assert ("varlen_attn" in attention.varlen_kernel("cuda")) == has
    assert "per document" in attention.varlen_kernel("cpu")


def test_speed_choices_and_their_errors():
    s = choose_speed(TrainConfig(), packing=True, training_only=True, device="cpu")
    assert (s.attn_implementation, s.liger, s.checkpointing, s.checkpointing_auto) == ("varlen", False, 0.0, False)
    g = choose_speed(TrainConfig(), packing=True, training_only=True, device="cuda")
    assert g.checkpointing_auto and g.checkpointing == 1.0
    assert choose_speed(TrainConfig(gradient_checkpointing=0.25), True, True, "cuda").checkpointing == 0.25
    with pytest.raises(TrainDataError, match="liger"):
        choose_speed(TrainConfig(liger=True), True, True, "cpu")
    assert "varlen" in s.describe()


def test_checkpointing_share_is_validated():
    from distill.config import RecipeError

    for bad in (1.5, -0.2, "some"):
        with pytest.raises(RecipeError):
            load_recipe(ROOT / "recipes/quickstart.yaml", [f"train.gradient_checkpointing={bad}"])
    for given, read in ((0.5, 0.5), (0, False), (1, True), ("auto", "auto")):
        r = load_recipe(ROOT / "recipes/quickstart.yaml", [f"train.gradient_checkpointing={given}"])
        assert r.train.gradient_checkpointing == read and type(r.train.gradient_checkpointing) is type(read)


# ----------------------------------------------------------------------------------------------
# the same numbers as the dense-mask path


@pytest.mark.parametrize("arch,kv", [("qwen2", 2), ("qwen2", 4), ("llama", 1)])
def test_varlen_equals_the_dense_block_diagonal_mask(arch, kv):
    m = tiny(arch, kv)
    register()
    ids, pos, kw = packed([5, 17, 9, 1, 30])
    ref = logits(m, "eager", input_ids=ids, position_ids=pos)
    for impl in ("sdpa", "varlen"):
        assert torch.allclose(logits(m, impl, input_ids=ids, position_ids=pos, **kw), ref, atol=1e-5), impl
    # without the collator's cu_seq_lens the documents come from the position ids
    assert torch.allclose(logits(m, "varlen", input_ids=ids, position_ids=pos), ref, atol=1e-5)
    # and each document equals the same document run alone
    alone = torch.cat([logits(m, "eager", input_ids=ids[:, s:s + n]) for s, n in
                       zip([0, 5, 22, 31, 32], [5, 17, 9, 1, 30], strict=True)], 1)
    assert torch.allclose(alone, ref, atol=1e-5)


def test_varlen_unpads_padded_rows():
    m = tiny()
    register()
    ids = torch.randint(0, 300, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 7:] = 0
    mask[2, 3:] = 0
    a = logits(m, "varlen", input_ids=ids, attention_mask=mask)
    b = logits(m, "sdpa", input_ids=ids, attention_mask=mask)
    keep = mask.bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5)


def test_varlen_refuses_a_kv_cache_with_the_fix():
    m = tiny()
    register()
    m.set_attn_implementation("varlen")
    with pytest.raises(NotImplementedError, match="sdpa"):
        m.generate(torch.randint(0, 300, (1, 4)), max_new_tokens=2, do_sample=False)


def test_packed_rows_build_no_dense_mask(monkeypatch):
    """The point of the fast path: no L x L mask reaches attention, and every SDPA call is a plain causal one."""
    import torch.nn.functional as F

    m = tiny()
    register()
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((attn_mask, kw.get("is_causal"), q.shape[-2]))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ids, pos, kw = packed([40, 60, 28])
    logits(m, "varlen", input_ids=ids, position_ids=pos, **kw)
    assert calls and all(mask is None and causal for mask, causal, _ in calls)
    assert max(n for *_, n in calls) == 60  # per document, never the whole 128-token row
    calls.clear()
    logits(m, "sdpa", input_ids=ids, position_ids=pos, **kw)  # the slow path, for contrast: a 128 x 128 mask
    assert calls[0][0] is not None and calls[0][0].shape[-2:] == (128, 128)


# ----------------------------------------------------------------------------------------------
# checkpointing


def test_fractional_checkpointing_sets_the_first_layers():
    m = tiny()
    m.gradient_checkpointing_enable()
    assert checkpoint_layers(m, 2 / 3) == 2
    flags = [layer.gradient_checkpointing for layer in m.model.layers]
    assert flags == [True, True, False]
    m.train()
    out = m(input_ids=torch.randint(0, 300, (1, 16)), labels=torch.randint(0, 300, (1, 16)))
    out.loss.backward()  # mixed layers still give gradients everywhere
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_auto_checkpointing_arithmetic():
    gib = 2**30
    per = activation_bytes_per_token_layer(1536, 8960, liger=False)  # Qwen2.5-1.5B
    assert 95_000 < per < 115_000  # measured 102 KB a token and layer on an H100
    assert activation_bytes_per_token_layer(1536, 8960, liger=True) < per
    assert activation_bytes_per_token_layer(1536, 8960, liger=False, lora=True) > per
    # one H100 after loading the 1.5B model: 8k x 2 rows fit without recomputation, 32k x 2 rows do not
    free, total, pending = 76 * gib, 79.6 * gib, 9.3 * gib
    assert auto_checkpoint_share(28, 2 * 8192, per, free, total, pending) == 0.0
    s32 = auto_checkpoint_share(28, 2 * 32768, per, free, total, pending)
    assert 0.5 < s32 < 1.0
    # less memory: more layers; no memory at all: every layer
    assert auto_checkpoint_share(28, 2 * 32768, per, free / 2, total, pending) > s32
    assert auto_checkpoint_share(28, 2 * 32768, per, 5 * gib, total, pending) == 1.0


# ----------------------------------------------------------------------------------------------
# the trainer end to end: loss on a collated batch and the loss mask


@pytest.fixture(scope="module")
def trainer_and_rows(tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from distill.models import resolve_model
    from distill.train.sft import build_trainer

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded").path)
    g = torch.Generator().manual_seed(1)
    rows = []
    for n in (30, 55, 12, 80, 41, 23):
        ids = torch.randint(10, 300, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * 6 + ids[6:]})
    recipe = load_recipe(ROOT / "recipes/quickstart.yaml", ["train.max_length=128", "train.per_device_batch_size=2",
                                                             "train.save_strategy=no", "train.max_steps=1"])
    model = tiny()
    model.train()
    tr = build_trainer(recipe, model, Dataset.from_list(rows), tok, tmp_path_factory.mktemp("t"))
    return tr, rows


def test_trainer_uses_varlen_and_the_loss_matches_the_slow_path(trainer_and_rows):
    tr, _ = trainer_and_rows
    assert tr.distill_speed.attn_implementation == "varlen"
    assert tr.model.config._attn_implementation == "varlen"
    batch = next(iter(tr.get_train_dataloader()))
    assert "attention_mask" not in batch and "cu_seq_lens_q" in batch
    losses = {}
    with torch.no_grad():
        for impl in ("sdpa", "varlen"):
            tr.model.set_attn_implementation(impl)
            losses[impl] = float(tr.model(**batch, use_cache=False, fused_lm_head=True).loss)
    tr.model.set_attn_implementation("varlen")
    assert abs(losses["sdpa"] - losses["varlen"]) < 1e-4


def test_loss_mask_of_a_collated_packed_batch_is_the_examples_own(trainer_and_rows):
    tr, rows = trainer_and_rows
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in rows}
    seen = 0
    for batch in tr.get_train_dataloader():
        cu = batch["cu_seq_lens_q"].tolist()
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        for s, e in zip(cu[:-1], cu[1:], strict=True):
            want = by_ids[tuple(ids[s:e])]
            # the collator masks each document's first label (no previous token of its own); the rest is unchanged
            assert labels[s + 1:e] == want[1:] and labels[s] == -100
            seen += 1
    assert seen == len(rows)


def test_saved_student_reloads_with_default_attention_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.train.common import save_student

    class T:  # the part of a Trainer save_student uses
        def __init__(self, model):
            self.model = model

        def save_model(self, out):
            self.model.save_pretrained(out)

        def is_world_process_zero(self):
            return True

    from transformers import AutoTokenizer

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded").path)
    m = tiny()
    register()
    m.set_attn_implementation("varlen")
    save_student(T(m), tok, tok.eos_token_id, tmp_path, merge=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "varlen" not in json.dumps(cfg)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config._attn_implementation != "varlen"
    again.generate(torch.randint(0, 300, (1, 4)), max_new_tokens=2, do_sample=False)


@pytest.mark.slow
def test_gpu_benchmark_runs_at_toy_size_on_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_gpu.py"), "--check-loss", "--steps", "2",
                          "--warmup", "1", "--runs", "toy:512:2:ckpt=0;toy:512:1:ckpt=0.5,ga=2;grpo:toy",
                          "--grpo-completion", "8"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| toy") or line.startswith("| grpo")]
    assert len(table) == 3 and "varlen" in table[0] and "50%" in table[1] and "steps/s" in table[2]
    assert "|diff|" in out.stdout


def test_varlen_only_where_it_computes_the_models_own_attention():
    from transformers import Gemma2Config, Gemma2ForCausalLM, GptOssConfig, LlamaConfig

    from distill.train.examples import PreflightError
    from distill.train.sft import exact_attention

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16)
    gemma = Gemma2Config(**small)
    assert "soft-capping" in attention.inexact_for(gemma)
    assert "sinks" in attention.inexact_for(GptOssConfig(**small, num_local_experts=2))
    assert attention.inexact_for(LlamaConfig(**small)) is None
    # a sliding window that bites (shorter than the rows, and in use) is inexact; Qwen2.5's unused one is not
    from transformers import MistralConfig, Qwen2Config

    assert "sliding attention window of 4096" in attention.inexact_for(MistralConfig(**small, sliding_window=4096), 8192)
    assert attention.inexact_for(MistralConfig(**small, sliding_window=4096), 4096) is None
    assert attention.inexact_for(Qwen2Config(**small, sliding_window=4096), 32768) is None  # use_sliding_window false
    assert "sliding" in attention.inexact_for(Qwen2Config(**small, use_sliding_window=True, sliding_window=4096,
                                                          max_window_layers=0), 32768)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(gemma)
    auto = choose_speed(TrainConfig(), packing=True, training_only=True, device="cpu")
    assert auto.attn_implementation == "varlen"
    chosen = exact_attention(auto, TrainConfig(), model)  # auto: SDPA, saying why
    assert chosen.attn_implementation == "sdpa" and "soft-capping" in chosen.attention_reason
    asked = choose_speed(TrainConfig(attn_implementation="varlen"), packing=True, training_only=True, device="cpu")
    with pytest.raises(PreflightError, match="does not implement attention logit soft-capping"):
        exact_attention(asked, TrainConfig(attn_implementation="varlen"), model)
    # and if varlen is forced on such a model anyway, its forward refuses instead of computing other logits
    register()
    model.set_attn_implementation("varlen")
    with pytest.raises(NotImplementedError, match="soft-capping or sinks"):
        model(torch.tensor([[1, 2, 3, 4]]), position_ids=torch.tensor([[0, 1, 0, 1]]))
