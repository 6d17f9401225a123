"""distill grpo: each reward from a worker thread, recipes, and real GRPO steps on a model built from a config."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from distill.config import GrpoConfig, RecipeError, load_recipe
from distill.train.rewards import REWARDS, AccuracyReward, FormatReward, LanguageReward, build_rewards

ROOT = Path(__file__).resolve().parents[1]

RIGHT = "<think>\nFive plus six is eleven.\n</think>\n\n\\boxed{11}"
WRONG = "<think>\nFive plus six is twelve.\n</think>\n\n\\boxed{12}"
MALFORMED = "<think>\nFive plus six is eleven and then \\boxed{11"  # never closes, box cut off
NO_THINK = "The answer is \\boxed{11}."
MIXED = ("<think>\nFive plus six makes eleven, since five and five make ten.\n\n"
         "Cinco más seis son once, lo sé porque cinco más cinco son diez y uno más son once, así que la respuesta es once.\n"
         "</think>\n\n\\boxed{11}")
CHINESE = "<think>\n五加六等于十一。我们先把五和五相加得到十，再加一得到十一。\n</think>\n\n\\boxed{11}"


def in_thread(fn, *args, **kw):
    """Call fn in a worker thread, as TRL may: signal-based timeouts would raise there."""
    box = {}

    def run():
        try:
            box["v"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            box["e"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "reward hung in a worker thread"
    if "e" in box:
        raise box["e"]
    return box["v"]


def cols(n, answer="11", problem="What is 5 + 6?", prefill=""):
    return {"answer": [answer] * n, "problem": [problem] * n, "prefill": [prefill] * n,
            "prompt_template": ["r1"] * n, "meta": ["{}"] * n}


@pytest.mark.parametrize("workers", [0, 1])
def test_accuracy_reward_right_wrong_malformed_from_a_thread(workers):
    f = AccuracyReward(timeout=5, workers=workers)
    try:
        comps = [RIGHT, WRONG, MALFORMED, NO_THINK, MIXED, ""]
        got = in_thread(f, prompts=["p"] * 6, completions=comps, **cols(6))
        # a closed block and the right box; a wrong box; no final part; plain text with the right box;
        # right answer in another language; empty
        assert got == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
        # conversational completions, as TRL passes them for chat prompts
        conv = [[{"role": "assistant", "content": c}] for c in (RIGHT, WRONG)]
        assert in_thread(f, prompts=["p"] * 2, completions=conv, **cols(2)) == [1.0, 0.0]
        # the prompt's prefill is part of the answer: "<think>\n" was in the prompt, not the completion
        tail = RIGHT.removeprefix("<think>\n")
        assert in_thread(f, prompts=["p"], completions=[tail], **cols(1, prefill="<think>\n")) == [1.0]
        # a completion cut inside its answer scores 0, as the filter and eval judge it
        cut = "5 + 6 = 11, so the answer is \\boxed{11}. Also \\boxed{"
        assert in_thread(f, prompts=["p"], completions=[cut], **cols(1)) == [0.0]
    finally:
        f.close()


def test_accuracy_reward_survives_a_hostile_answer_with_a_hard_timeout():
    f = AccuracyReward(timeout=2, workers=1)
    try:
        hostile = "<think>x</think> \\boxed{9^{9^{9^{9^{9}}}}}"
        got = in_thread(f, prompts=["p"] * 2, completions=[hostile, RIGHT], **cols(2))
        assert got == [0.0, 1.0]
    finally:
        f.close()


def test_format_reward_right_wrong_malformed_mixed_from_a_thread():
    f = FormatReward()
    comps = [RIGHT, WRONG, MALFORMED, NO_THINK, MIXED, "<think>a</think><think>b</think>\\boxed{1}",
             "<think>\n</think>\n\\boxed{11}"]
    got = in_thread(f, prompts=["p"] * len(comps), completions=comps, **cols(len(comps)))
    # format does not judge correctness (WRONG is well formed) nor language (MIXED is well formed);
    # two blocks and an empty block are malformed
    assert got == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    zero = "<think> 5+6 </think> <answer> 11 </answer>"
    c = cols(2)
    c["prompt_template"] = ["r1-zero"] * 2
    assert in_thread(f, prompts=["p"] * 2, completions=[zero, "<think> 5+6 </think> 11"], **c) == [1.0, 0.0]


def test_language_reward_is_the_target_language_share_from_a_thread():
    f = LanguageReward("en")
    got = in_thread(f, prompts=["p"] * 5, completions=[RIGHT, WRONG, MIXED, CHINESE, MALFORMED], **cols(5))
    assert got[0] == 1.0 and got[1] == 1.0
    assert 0.0 < got[2] < 0.5  # one English sentence, a longer Spanish one
    assert got[3] == 0.0
    assert got[4] == 1.0  # an unclosed block is still English reasoning: format is another reward's job
    # the target defaults to the problem's language
    zh = in_thread(LanguageReward(None), prompts=["p"], completions=[CHINESE],
                   **cols(1, problem="五加六等于多少？"))
    assert zh == [1.0]


def test_reward_registry_and_weights_come_from_the_recipe():
    funcs, weights = build_rewards(GrpoConfig(rewards={"accuracy": 1.0, "language": 0.5}))
    assert [f.__name__ for f in funcs] == ["accuracy", "language"] and weights == [1.0, 0.5]
    assert set(REWARDS) == {"accuracy", "code", "format", "language"}
    with pytest.raises(RecipeError, match="unknown reward.*known: accuracy"):
        build_rewards(GrpoConfig(rewards={"acuracy": 1.0}))


def test_rewards_pickle_without_their_pool():
    import pickle

    f = AccuracyReward(workers=1)
    f(prompts=["p"], completions=[RIGHT], **cols(1))
    g = pickle.loads(pickle.dumps(f))
    assert g._pool is None and g(prompts=["p"], completions=[RIGHT], **cols(1)) == [1.0]
    f.close()
    g.close()


def test_grpo_batch_check_counts_processes_and_defaults_to_the_reports_loss():
    from distill.config import RecipeError
    from distill.train.grpo import check_batch

    cfg = GrpoConfig()
    assert (cfg.loss_type, cfg.beta, cfg.scale_rewards) == ("grpo", 0.001, "group")
    # per-device 4, accumulation 1, G 16: whole groups on 8 GPUs (32 a batch), not on one
    wide = GrpoConfig(per_device_batch_size=4, gradient_accumulation_steps=1, num_generations=16)
    check_batch(wide, 8)
    with pytest.raises(RecipeError, match=r"4 x 1 process\(es\) x gradient_accumulation_steps 1 = 4 .*"
                                          r"num_generations 16"):
        check_batch(wide, 1)
    with pytest.raises(RecipeError, match="multiple of num_generations 4"):
        check_batch(GrpoConfig(per_device_batch_size=6, num_generations=4), 1)
    check_batch(GrpoConfig(per_device_batch_size=6, num_generations=4), 2)  # 12 completions: 3 groups


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "grpo").glob("*.yaml")), ids=lambda p: p.name)
def test_grpo_recipes_validate_and_say_their_loss(path):
    r = load_recipe(path)
    text = path.read_text()
    assert "loss_type" in text and "beta" in text, "each GRPO recipe states its loss deliberately"
    assert r.problems is not None
    g = r.grpo
    assert (g.per_device_batch_size * g.gradient_accumulation_steps) % g.num_generations == 0
    from distill.train.grpo import grpo_config

    args = grpo_config(r, Path("/tmp/unused"))  # TRL accepts every key the recipe sets
    assert (args.loss_type, args.beta, args.num_generations) == (g.loss_type, g.beta, g.num_generations)
    assert args.reward_weights == list(g.rewards.values()) and args.use_vllm == g.use_vllm


# -- real steps ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A random 2-layer Llama with the embedded model's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded").path)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    import torch

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("policy")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _recipe(policy, **over):
    sets = {"problems.task": "arithmetic", "problems.count": 4, "prompt.template": "plain", "grpo.model": str(policy),
            "grpo.num_generations": 4, "grpo.per_device_batch_size": 8, "grpo.max_completion_length": 8,
            "grpo.max_steps": 1, "grpo.learning_rate": 1e-3, "grpo.save_strategy": "no", "grpo.reward_workers": 1}
    sets.update(over)
    return load_recipe(None, [f"{k}={v}" for k, v in sets.items()])


def test_one_real_grpo_step_with_kl_to_the_reference(tiny_policy, tmp_path):
    import torch
    from safetensors.torch import load_file

    from distill.train.grpo import train_grpo

    r = _recipe(tiny_policy, **{"grpo.beta": 0.01, "grpo.rewards": "{accuracy: 1.0, format: 1.0, language: 0.5}"})
    s = train_grpo(r, out=tmp_path / "g")
    assert s.steps == 1 and s.completions == 8
    step = next(x for x in s.log if "reward" in x)
    assert {"rewards/accuracy/mean", "rewards/format/mean", "rewards/language/mean", "kl"} <= set(step)
    assert torch.isfinite(torch.tensor(step["loss"]))
    before = load_file(str(tiny_policy / "model.safetensors"))
    after = load_file(str(tmp_path / "g" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before), "the policy did not change"
    d = json.loads((tmp_path / "g" / "grpo_summary.json").read_text())
    assert d["recipe"]["grpo"]["loss_type"] == "grpo" and (tmp_path / "g" / "rewards.png").stat().st_size > 0
    assert json.loads((tmp_path / "g" / "generation_config.json").read_text())["eos_token_id"]


def test_grpo_with_a_prefilled_r1_prompt_and_lora(tiny_policy, tmp_path):
    from distill.train.grpo import build_dataset, train_grpo
    from distill.train.sft import TrainConfig, load_tokenizer

    r = _recipe(tiny_policy, **{"prompt.template": "r1", "grpo.lora.enabled": "true", "grpo.beta": 0.0,
                                "grpo.loss_type": "dapo"})
    ds, _ = build_dataset(r, load_tokenizer(str(tiny_policy), TrainConfig()))
    row = ds[0]
    assert isinstance(row["prompt"], str) and row["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert row["prefill"] == "<think>\n" and "\\boxed{}" in row["prompt"]
    s = train_grpo(r, out=tmp_path / "g")
    assert s.steps == 1 and (tmp_path / "g" / "adapter_model.safetensors").exists()


def test_cli_grpo_bad_reward_is_one_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "distill", "grpo", "--recipe", "recipes/grpo/quickstart.yaml",
                          "--out", str(tmp_path / "g"), "--set", "grpo.rewards={acc: 1}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown reward" in out.stdout + out.stderr and not (tmp_path / "g").exists()


@pytest.fixture(scope="module")
def base_style_policy(tmp_path_factory):
    """A base checkpoint's shape of EOS: the model and tokenizer end text with <|endoftext|>, while the
    chat template closes an assistant turn with <|im_end|> (Qwen2.5-Math base)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded").path)
    tok.eos_token = "<|endoftext|>"
    tok.pad_token = "<|endoftext|>"
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base_policy")
    m = LlamaForCausalLM(cfg)
    m.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_rollouts_from_a_base_checkpoint_stop_at_the_templates_end_of_turn(base_style_policy, tmp_path):
    from distill.train.grpo import build_dataset, build_trainer
    from distill.train.sft import TrainConfig, load_tokenizer

    r = _recipe(base_style_policy, **{"grpo.max_completion_length": 16, "grpo.beta": 0.0, "grpo.loss_type": "dapo"})
    tok = load_tokenizer(str(base_style_policy), TrainConfig())
    eot, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token_id == eos != eot
    ds, _ = build_dataset(r, tok)
    trainer = build_trainer(r, str(base_style_policy), ds, tok, tmp_path / "g")
    assert trainer.eos_token_ids[:2] in ([eot, eos], [eos, eot]) and eot in trainer.generation_config.eos_token_id
    # Make the end of turn the likeliest token, as a chat-trained policy's would be after its answer:
    # the rollout must end there (1 token), not run on to max_completion_length into invented turns.
    trainer.generation_config.sequence_bias = [[[eot], 30.0]]
    trainer.train()
    step = next(x for x in trainer.state.log_history if "completions/mean_length" in x)
    assert step["completions/mean_length"] == 1.0 and step["completions/clipped_ratio"] == 0.0, step


def test_the_server_script_uses_the_nodes_gpus_for_tensor_parallelism(tmp_path):
    from distill.train.grpo import server_tensor_parallel
    from tests.conftest import tiny_llama

    four_heads = tiny_llama(tmp_path / "m", heads=4, kv_heads=2)
    assert server_tensor_parallel(str(four_heads), 8) == 4  # 8 does not divide 4 heads
    assert server_tensor_parallel(str(four_heads), 2) == 2
    assert server_tensor_parallel("embedded", 8) == 1  # SmolLM2-135M: 9 heads
    script = (ROOT / "recipes" / "grpo" / "slurm-vllm-server.sbatch").read_text()
    assert "VLLM_TP=${VLLM_TP:-$(python" in script and "server_tensor_parallel" in script
