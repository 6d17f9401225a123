from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a hub: everything loads from local files (the subprocesses inherit this).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def teacher():
    """The real hf teacher on the embedded model, loaded once for the session."""
    from distill.config import TeacherConfig
    from distill.teachers.hf import HFTeacher

    return HFTeacher(TeacherConfig(model="embedded", batch_size=8))


def tiny_recipe(**over):
    """A recipe small enough to generate in seconds on two cores."""
    from distill.config import load_recipe

    sets = {
        "problems.task": "arithmetic", "problems.count": 4, "sampling.n": 2, "sampling.max_tokens": 8,
        "prompt.template": "plain", "teacher.batch_size": 8,
    }
    sets.update(over)
    return load_recipe(None, [f"{k}={v}" for k, v in sets.items()])


def tiny_llama(d: Path, seed: int = 0, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               max_positions: int = 512) -> Path:
    """A random 2-layer Llama with the embedded tokenizer (and its template), built from a config."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded").path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def embedded_with_template(d: Path, template: str) -> Path:
    """The embedded model's weights (symlinked) with another chat template, e.g. DeepSeek-R1-Distill's."""
    from transformers import AutoTokenizer

    from distill.models import resolve_model

    src = resolve_model("embedded").path
    d.mkdir(parents=True)
    for f in os.listdir(src):
        if f.endswith((".safetensors", ".json")) and not f.startswith("tokenizer"):
            os.symlink(os.path.join(src, f), d / f)
    tok = AutoTokenizer.from_pretrained(src)
    tok.chat_template = template
    tok.save_pretrained(d)
    return d
