"""Compute accounting: the FLOPs rules and the GRPO budget callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from distill.compute import (
    Ledger,
    count_parameters,
    generation_flops,
    grpo_budget_callback,
    grpo_flops_per_token,
    sft_flops,
)


def test_flops_rules():
    samples = [{"prompt_tokens": 10, "completion_tokens": 30}, {"prompt_tokens": 10, "completion_tokens": 50,
                                                                  "kept": False}]
    assert generation_flops(samples, 1000) == 2 * 1000 * 100  # rejected samples cost the same
    assert sft_flops(500, 3, 1000) == 6 * 1000 * 500 * 3
    assert grpo_flops_per_token(beta=0.0) == 8      # generate 2 + train 6
    assert grpo_flops_per_token(beta=0.001) == 10   # + reference forward 2
    assert grpo_flops_per_token(beta=0.0, num_iterations=2) == 2 + 2 * 6 + 2  # + old policy forward
    led = Ledger()
    led.add("gen", 5.0)
    led.add("sft", 7.0)
    assert led.add("gen", 1.0) == 13.0 and led.items == {"gen": 6.0, "sft": 7.0}


def test_count_parameters_from_the_config_alone(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    m = LlamaForCausalLM(cfg)
    m.save_pretrained(tmp_path)
    assert count_parameters(str(tmp_path)) == sum(p.numel() for p in m.parameters())


def test_budget_callback_saves_at_fractions_and_stops_at_the_budget():
    from transformers import TrainerControl

    per_token = grpo_flops_per_token(0.001) * 100  # 100 parameters
    cb = grpo_budget_callback(budget=per_token * 1000, params=100, beta=0.001, checkpoints=(0.25, 0.5))
    seen = []
    for step, tokens in enumerate((200, 400, 600, 800, 1000, 1200), 1):
        c = cb.on_log(None, SimpleNamespace(global_step=step), TrainerControl(), logs={"num_tokens": tokens})
        seen.append((step, c.should_save, c.should_training_stop))
        if c.should_training_stop:
            break
    assert seen == [(1, False, False), (2, True, False), (3, True, False), (4, False, False), (5, True, True)]
    assert [s for s, _ in cb.points] == [2, 3, 5] and cb.flops == pytest.approx(per_token * 1000)
