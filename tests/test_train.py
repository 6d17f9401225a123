"""distill train: examples, the loss mask (token by token, two real template styles), the preflight,
real optimisation steps on a small model built from a config, LoRA merge, resume, and the recipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config import load_recipe
from distill.train.examples import (
    PreflightError,
    TrainDataError,
    apply_template,
    end_of_turn,
    preflight,
    read_examples,
    tokenize,
)

ROOT = Path(__file__).resolve().parents[1]
TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
R1_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]

ANSWER = "<think>\nSix plus six: count on from six, 7 8 9 10 11 12.\n</think>\n\nThe answer is $\\boxed{12}$."


def _row(q="What is 6 + 6?", answer=ANSWER, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}], **extra}


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def embedded_dir() -> str:
    from distill.models import resolve_model

    return resolve_model("embedded").path


@pytest.fixture
def tok(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


def _with(tok, template: Path | str, specials=()):
    if specials:
        tok.add_special_tokens({"additional_special_tokens": list(specials)})
    apply_template(tok, str(template))
    return tok


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, embedded_dir) -> Path:
    """A random 2-layer Llama with the embedded tokenizer (and its ChatML template), built from a config."""
    from tests.conftest import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-student"))


def _data(tmp_path, n=24) -> Path:
    rows = [_row(f"What is {i % 10} + {i // 10}?",
                 f"<think>\n{i % 10} + {i // 10} = {i % 10 + i // 10}\n</think>\n\nThe answer is $\\boxed{{{i % 10 + i // 10}}}$.",
                 problem=f"What is {i % 10} + {i // 10}?") for i in range(n)]
    return _write(tmp_path / "train.jsonl", rows)


def _recipe(model: Path, **sets):
    base = {"train.model": str(model), "prompt.template": "plain", "train.max_length": 128,
            "train.per_device_batch_size": 4, "train.learning_rate": 1e-3, "train.logging_steps": 1,
            "train.save_strategy": "no", "train.max_steps": 2, "train.warmup": 0, "train.dataset_num_proc": None}
    base.update(sets)
    return load_recipe(None, [f"{k}={v}" for k, v in base.items() if v is not None])


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ---------------------------------------------------------------------------------------------
# reading


def test_read_filter_export_splits_prompt_and_answer(tmp_path):
    ex = read_examples(_write(tmp_path / "train.jsonl", [_row(problem="What is 6 + 6?")]).parent)
    assert ex[0]["prompt"] == [{"role": "user", "content": "What is 6 + 6?"}]
    assert ex[0]["completion"] == [{"role": "assistant", "content": ANSWER}]
    assert ex[0]["problem"] == "What is 6 + 6?"
    assert ex[0]["where"].endswith("train.jsonl line 1")


def test_read_prompt_completion_rows(tmp_path):
    row = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}
    ex = read_examples(_write(tmp_path / "x.jsonl", [row]))
    assert ex[0]["prompt"][0]["content"] == "q" and ex[0]["completion"][0]["content"] == "a"


@pytest.mark.parametrize("bad, msg", [
    ('{"messages": [', "line 2: not valid JSON"),
    ({"text": "hi"}, "line 2: no `messages` field (keys: text)"),
    ({"messages": [{"role": "user", "content": "q"}]}, "line 2: the last message must be the assistant's"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "line 2: no user message"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "line 2: messages[0] must be"),
])
def test_bad_records_name_file_and_line(tmp_path, bad, msg):
    p = _write(tmp_path / "t.jsonl", [_row(), bad])
    with pytest.raises(TrainDataError, match=msg.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as e:
        read_examples(p)
    assert str(p) in str(e.value)


def test_missing_data_dir_says_run_filter(tmp_path):
    with pytest.raises(TrainDataError, match="no train.jsonl or train.parquet"):
        read_examples(tmp_path)


# ---------------------------------------------------------------------------------------------
# the loss mask, token by token


def _check_mask_token_by_token(tok, expected_trained_text: str):
    ex = read_examples_inline(_row())
    t = tokenize(tok, ex["prompt"], ex["completion"])
    ids, labels = t["input_ids"], t["labels"]
    full = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
    prompt = tok.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and full[len(prompt):] == expected_trained_text
    # the boundary: the first token whose text starts at or after the end of the prompt text
    k = next(i for i in range(len(ids) + 1) if tok.decode(ids[:i]) == prompt)
    for i, (tid, lab) in enumerate(zip(ids, labels, strict=False)):
        if i < k:
            assert lab == -100, f"prompt token {i} {tok.convert_ids_to_tokens(tid)!r} carries loss"
        else:
            assert lab == tid, f"answer token {i} {tok.convert_ids_to_tokens(tid)!r} is masked"
    assert tok.decode([i for i, lab in zip(ids, labels, strict=False) if lab != -100]) == expected_trained_text
    return t


def read_examples_inline(row):
    from distill.train.examples import split_messages

    prompt, completion = split_messages(row, "inline")
    return {"prompt": prompt, "completion": completion, "problem": None, "where": "inline"}


def test_mask_chatml_qwen25_template(tok):
    _with(tok, TRL_TEMPLATES / "qwen2_5.jinja")  # Qwen2.5's real template (ChatML, default system prompt)
    t = _check_mask_token_by_token(tok, ANSWER + "<|im_end|>\n")
    eot, name = end_of_turn(tok)
    assert name == "<|im_end|>" and eot in [i for i, lab in zip(t["input_ids"], t["labels"], strict=False) if lab != -100]


def test_mask_llama3_template(tok):
    _with(tok, ROOT / "recipes/templates/llama3.jinja", LLAMA_SPECIALS)
    # Llama-3 puts "\n\n" after the header and the answer follows; the tokenizer may merge "\n\n<"
    # across the boundary, so check the trained text and the end of turn rather than a clean cut
    ex = read_examples_inline(_row())
    t = tokenize(tok, ex["prompt"], ex["completion"])
    trained = tok.decode([i for i, lab in zip(t["input_ids"], t["labels"], strict=False) if lab != -100])
    assert trained.endswith("The answer is $\\boxed{12}$.<|eot_id|>")
    assert "Six plus six" in trained and "</think>" in trained and "What is 6 + 6" not in trained
    assert end_of_turn(tok)[1] == "<|eot_id|>"
    assert t["labels"][-1] == tok.convert_tokens_to_ids("<|eot_id|>")


def test_mask_meta_llama31_template(tok):
    _with(tok, TRL_TEMPLATES / "llama3_1.jinja", LLAMA_SPECIALS)  # Meta's template, date preamble and all
    ex = read_examples_inline(_row())
    pf = preflight(tok, ex, tokenize(tok, ex["prompt"], ex["completion"]), load_recipe(None, ["prompt.template=plain"]).prompt)
    assert pf.ok, pf.failures()
    assert pf.eot_token == "<|eot_id|>"


# ---------------------------------------------------------------------------------------------
# preflight


def _pf(tok, prompt_sets=("prompt.template=plain",), row=None):
    ex = read_examples_inline(row or _row())
    return preflight(tok, ex, tokenize(tok, ex["prompt"], ex["completion"]), load_recipe(None, list(prompt_sets)).prompt)


def test_preflight_passes_on_embedded_template(tok):
    pf = _pf(tok)
    assert pf.ok and [c[0] for c in pf.checks] == ["reasoning trained", "prompt masked", "end of turn trained",
                                                   "same prompt as eval"]


def test_preflight_r1_prefill_matches_think_answer(tok):
    # eval sends "<|im_start|>assistant\n<think>\n"; the training answer starts with the same text
    assert _pf(tok, ("prompt.template=r1", "prompt.force_think=true")).ok


def test_preflight_refuses_template_that_strips_reasoning(tok):
    _with(tok, TRL_TEMPLATES / "deepseek_r1_distill.jinja", R1_SPECIALS)
    pf = _pf(tok)
    assert not pf.ok
    assert any("drops the reasoning" in f for f in pf.failures())
    assert any(f.startswith("same prompt as eval") for f in pf.failures())


def test_preflight_refuses_template_without_end_of_turn(tok, tmp_path):
    t = tmp_path / "open.jinja"
    t.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
    _with(tok, t)
    pf = _pf(tok)
    assert any("never learns to stop" in f for f in pf.failures())


def test_preflight_refuses_generation_prompt_that_differs_from_training(tok, tmp_path):
    # the generation prompt opens the turn with a marker that training never renders
    t = tmp_path / "odd.jinja"
    t.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\nSure! {% endif %}")
    _with(tok, t)
    pf = _pf(tok)
    fails = pf.failures()
    assert any(f.startswith("same prompt as eval") and "Sure!" in f for f in fails)


def test_preflight_refuses_r1_zero_eval(tok):
    pf = _pf(tok, ("prompt.template=r1-zero",))
    assert any("r1-zero" in f for f in pf.failures())


def test_no_chat_template_is_refused(tok):
    tok.chat_template = None
    with pytest.raises(PreflightError, match="has no chat template and the recipe names none.*train.chat_template: chatml"):
        apply_template(tok, None)
    apply_template(tok, "chatml")
    assert _pf(tok).ok


def test_preflight_warns_when_eval_prompt_is_worded_differently(tok):
    row = _row(q="What is 6 + 6?\nPlease reason step by step, and put your final answer within \\boxed{}.")
    ex = read_examples_inline(row)
    ex["problem"] = "What is 6 + 6?"
    pf = preflight(tok, ex, tokenize(tok, ex["prompt"], ex["completion"]), load_recipe(None, ["prompt.template=plain"]).prompt)
    assert pf.ok and any("worded differently" in w for w in pf.warnings)


# ---------------------------------------------------------------------------------------------
# training on a small model built from a config


def test_dry_run_trains_nothing(tmp_path, tiny_student):
    from distill.train.sft import train

    s = train(_recipe(tiny_student), data=_data(tmp_path), out=tmp_path / "out", dry_run=True)
    assert s.dry_run and s.examples == 24 and 0 < s.trained_tokens < s.tokens
    assert not (tmp_path / "out").exists()


def test_one_step_learns_and_saves_a_loadable_student(tmp_path, tiny_student):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from distill.train.sft import train

    out = tmp_path / "student"
    s = train(_recipe(tiny_student, **{"train.max_steps": 1}), data=_data(tmp_path), out=out)
    assert s.steps == 1
    assert s.final_loss is not None and torch.isfinite(torch.tensor(s.final_loss))
    before, after = _weights(tiny_student), _weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "an optimizer step changed almost nothing"
    # loads as is, with the chat template it was trained through and an EOS on the end of turn
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    gen = GenerationConfig.from_pretrained(out)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["summary"]["steps"] == 1 and summary["recipe"]["train"]["max_steps"] == 1
    assert (out / "loss.png").stat().st_size > 1000


def test_padded_and_packed_both_train(tmp_path, tiny_student):
    from distill.train.sft import train

    s = train(_recipe(tiny_student, **{"train.packing": False}), data=_data(tmp_path), out=tmp_path / "o")
    assert s.steps == 2 and s.final_loss is not None


def test_context_override_reaches_the_saved_config(tmp_path, tiny_student):
    from distill.train.sft import train

    out = tmp_path / "long"
    train(_recipe(tiny_student, **{"train.max_steps": 1, "train.context.rope_theta": 300000,
                                   "train.context.max_position_embeddings": 1024}), data=_data(tmp_path), out=out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 1024 and cfg["rope_parameters"]["rope_theta"] == 300000


def test_lora_adapter_saved_and_merged(tmp_path, tiny_student):
    import torch

    from distill.train.sft import train

    out = tmp_path / "lora"
    train(_recipe(tiny_student, **{"train.lora.enabled": True, "train.lora.r": 4, "train.lora.alpha": 8,
                                   "train.lora.merge": True, "train.learning_rate": 1e-2}), data=_data(tmp_path), out=out)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged, base = _weights(out), _weights(tiny_student)
    assert not any("lora" in k for k in merged), "the merged student still holds LoRA tensors"
    assert set(merged) == set(base)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], base[q]), "merging changed nothing: the adapter did not train"
    assert json.loads((out / "config.json").read_text()).get("quantization_config") is None


def test_a_qlora_adapter_merges_into_bfloat16_weights_of_the_base(tmp_path, tiny_student):
    """What a QLoRA run's merge does after training (bitsandbytes and a GPU are not needed for this part):
    the base is loaded again without its quantization, in bfloat16, and the adapter merged into that."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from distill.train.common import merge_adapter

    m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_student),
                       LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    m.save_pretrained(tmp_path / "adapter")
    init = {"dtype": "bfloat16", "quantization_config": {"load_in_4bit": True}, "attn_implementation": "varlen"}
    merged = merge_adapter(tmp_path / "adapter", init)
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert getattr(merged.config, "quantization_config", None) is None
    offline = m.merge_and_unload().state_dict()  # merged in float32
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged.state_dict()[q].float(), _weights(tiny_student)[q], atol=1e-3), "not merged"
    for k, v in merged.state_dict().items():  # equal up to bfloat16 rounding, twice (the base, then the sum)
        err = (v.float() - offline[k]).abs().max().item()
        assert err <= 2 ** -6 * offline[k].abs().max().item(), (k, err)


def test_a_saved_copy_of_tied_embeddings_is_dropped(tmp_path, tiny_student):
    """ZeRO-1/2 saves write lm_head beside the tied embeddings it equals; the copy goes, the student still loads."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from distill.train.common import drop_tied_copy

    out = tmp_path / "s"
    shutil.copytree(tiny_student, out)
    w = _weights(out)
    save_file({**w, "lm_head.weight": w["model.embed_tokens.weight"].clone()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    assert drop_tied_copy(out) and set(load_file(str(out / "model.safetensors"))) == set(w)
    m = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(m.lm_head.weight, w["model.embed_tokens.weight"])
    # an output layer that differs is a real one: kept
    save_file({**w, "lm_head.weight": torch.zeros_like(w["model.embed_tokens.weight"])}, str(out / "model.safetensors"))
    assert not drop_tied_copy(out) and "lm_head.weight" in load_file(str(out / "model.safetensors"))


def test_resume_from_last_checkpoint(tmp_path, tiny_student):
    from distill.train.sft import train

    out = tmp_path / "r"
    sets = {"train.save_strategy": "steps", "train.save_steps": 1, "train.per_device_batch_size": 2,
            "train.packing": False}
    first = train(_recipe(tiny_student, **sets), data=_data(tmp_path), out=out)
    assert first.steps == 2 and (out / "checkpoint-2").is_dir()
    second = train(_recipe(tiny_student, **{**sets, "train.max_steps": 4}), data=_data(tmp_path), out=out)
    assert second.resumed_from and second.resumed_from.endswith("checkpoint-2")
    assert second.steps == 4
    log_steps = [x["step"] for x in second.log if "loss" in x]
    assert min(log_steps) == 1 and max(log_steps) == 4  # the log carries over from the checkpoint


def test_examples_longer_than_max_length_are_dropped_not_truncated(tmp_path, tiny_student):
    from distill.train.sft import train

    long = _row(answer="<think>\n" + "one two three " * 80 + "\n</think>\n\n\\boxed{1}")
    rows = [json.loads(line) for line in _data(tmp_path).read_text().splitlines()] + [long]
    s = train(_recipe(tiny_student), data=_write(tmp_path / "mixed.jsonl", rows), dry_run=True)
    assert s.examples == 24 and s.dropped_too_long == 1


# ---------------------------------------------------------------------------------------------
# CLI and recipes


def test_cli_dry_run_and_bad_data(tmp_path, tiny_student):
    env_cmd = [sys.executable, "-m", "distill", "train", "--set", f"train.model={tiny_student}",
               "--set", "prompt.template=plain"]
    ok = subprocess.run(env_cmd + ["--data", str(_data(tmp_path)), "--dry-run"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "preflight" in ok.stderr and "end of turn trained" in ok.stderr and "nothing was trained" in ok.stderr
    bad = _write(tmp_path / "bad.jsonl", [_row(), "{oops"])
    r = subprocess.run(env_cmd + ["--data", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad} line 2: not valid JSON" in r.stderr
    assert not (tmp_path / "o").exists()


SFT_RECIPES = sorted((ROOT / "recipes/sft").glob("*.yaml"))
STUDENTS = {"Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-7B", "Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-32B",
            "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.3-70B-Instruct"}


def test_every_r1_student_has_a_recipe():
    assert {load_recipe(p).train.model for p in SFT_RECIPES} == STUDENTS


@pytest.mark.parametrize("path", SFT_RECIPES, ids=lambda p: p.name)
def test_sft_recipe_is_valid(path, tok):
    import re

    r = load_recipe(path)
    t = r.train
    sp = t.sequence_parallel
    assert t.dtype == "bfloat16" and t.gradient_checkpointing in (True, "auto")
    assert t.packing == (sp == 1)  # sequence parallelism runs one trace a row (its preflight refuses packing)
    # the fast path as shipped: no dense L x L mask for packed rows (flash-attn or torch's varlen kernel)
    assert t.attn_implementation == "auto"
    assert r.prompt.template == "r1" and r.prompt.force_think
    assert t.max_length >= 16384
    if "Math" in t.model:  # 4096 native positions: the recipe must extend them
        assert t.context.rope_theta == 300000 and t.context.max_position_embeddings >= t.max_length
    if t.chat_template:
        assert (ROOT / t.chat_template).is_file()
    text = path.read_text()
    assert "accelerate" in text and "Effective batch" in text
    # the comment's effective batch is what the numbers give on the layout it names
    if sp == 1:  # counted in packed rows (each holds several whole traces), as open-r1 counts its batches
        m = re.search(r"Effective batch (\d+) packed rows = (\d+) rows per GPU x (\d+) accumulation x (\d+) GPUs", text)
        assert m and int(m[1]) == int(m[2]) * int(m[3]) * int(m[4])
        assert int(m[2]) == t.per_device_batch_size and int(m[3]) == t.gradient_accumulation_steps
        return
    m = re.search(r"Effective batch (\d+) traces = 1 trace per group x (\d+) accumulation x (\d+) groups of (\d+) GPUs",
                  text)
    assert m and int(m[1]) == int(m[2]) * int(m[3]) and int(m[4]) == sp and t.per_device_batch_size == 1
    assert int(m[2]) == t.gradient_accumulation_steps and t.max_length == 32768
    gpus = int(re.search(r"--num_processes (\d+)", text)[1])
    assert gpus == int(m[3]) * sp and "zero3.yaml" in text
    # the published shape passes the sequence-parallel preflight on the launch the comment names
    from transformers import LlamaConfig

    from benchmarks.sft_memory import SHAPES
    from distill.train.common import choose_speed
    from distill.train.sft import sequence_parallel_speed

    shape = SHAPES[t.model]
    config = LlamaConfig(num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, hidden_size=shape.hidden)
    env = {"WORLD_SIZE": str(gpus), "ACCELERATE_USE_DEEPSPEED": "true"}
    with _environ(env):
        speed = sequence_parallel_speed(choose_speed(t, t.packing, True, "cuda"), t, _Model(config))
    assert speed.attn_implementation in ("sdpa", "flash_attention_2") and f"over {sp} ranks" in speed.attention_reason


class _Model:
    def __init__(self, config):
        self.config = config


def _environ(env: dict):
    from unittest import mock

    return mock.patch.dict("os.environ", env)


def _sp_failures(tmp_path, env: dict, **sets) -> str:
    from transformers import LlamaConfig

    from distill.train.common import choose_speed
    from distill.train.examples import PreflightError
    from distill.train.sft import sequence_parallel_speed

    heads, kv = sets.pop("heads", 8), sets.pop("kv", 2)
    t = _recipe(tmp_path, **sets).train
    with _environ(env), pytest.raises(PreflightError) as e:
        sequence_parallel_speed(choose_speed(t, t.packing, True, "cpu"), t,
                                _Model(LlamaConfig(num_attention_heads=heads, num_key_value_heads=kv,
                                                   hidden_size=heads * 16)))
    return str(e.value)


def test_sequence_parallel_preflight_names_every_failure_and_its_fix(tmp_path):
    ds = {"WORLD_SIZE": "6", "ACCELERATE_USE_DEEPSPEED": "true"}
    text = _sp_failures(tmp_path, ds, heads=12, kv=6, **{"train.sequence_parallel": 4, "train.max_length": 130,
                                                         "train.packing": True})
    assert "6 processes cannot be split into sequence-parallel groups of 4" in text
    assert "12 attention heads" not in text  # 12 heads split over 4 ranks is fine
    assert "6 key/value heads" in text and "train.max_length 130 is not a multiple" in text
    assert "train.packing: true" in text and "set train.packing: false" in text.lower()
    text = _sp_failures(tmp_path, {"WORLD_SIZE": "2"}, heads=6, **{"train.sequence_parallel": 4, "train.packing": False})
    assert "runs on DeepSpeed" in text and "zero3.yaml" in text and "6 attention heads" in text
    assert "among the divisors of 6" in text
    # KV heads fewer than the ranks are replicated, more must divide: 2 KV heads over 4 ranks is fine
    from transformers import LlamaConfig

    from distill.train.common import choose_speed
    from distill.train.sft import sequence_parallel_speed

    t = _recipe(tmp_path, **{"train.sequence_parallel": 4, "train.packing": False}).train
    with _environ({"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true"}):
        speed = sequence_parallel_speed(choose_speed(t, False, True, "cpu"), t,
                                        _Model(LlamaConfig(num_attention_heads=8, num_key_value_heads=2)))
    assert speed.attn_implementation == "sdpa" and "2 of 8 heads" in speed.attention_reason
    # explicit attention that the Ulysses wrapper does not run
    assert "wraps flash_attention_2 or sdpa" in _sp_failures(
        tmp_path, {}, **{"train.sequence_parallel": 2, "train.packing": False, "train.attn_implementation": "eager"})


def test_sequence_parallel_refuses_recurrent_layers_before_weights_load(tmp_path):
    """Linear-attention layers (Qwen3-Next's, for one) carry a state along the sequence, which Ulysses would
    restart on every rank's slice: refused in the preflight, as accelerate 1.16 refuses them at prepare."""
    from transformers import LlamaConfig

    from distill.train.common import choose_speed
    from distill.train.examples import PreflightError
    from distill.train.sft import sequence_parallel_args, sequence_parallel_speed

    config = LlamaConfig(num_attention_heads=8, num_key_value_heads=2)
    config.layer_types = ["linear_attention", "full_attention"]
    t = _recipe(tmp_path, **{"train.sequence_parallel": 2, "train.packing": False}).train
    with _environ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"}), pytest.raises(PreflightError) as e:
        sequence_parallel_speed(choose_speed(t, False, True, "cpu"), t, _Model(config))
    assert "linear_attention layers" in str(e.value) and "without train.sequence_parallel" in str(e.value)
    with _environ({"WORLD_SIZE": "4"}):
        pc = sequence_parallel_args(2, "sdpa", 128, "cpu")["parallelism_config"]
    h = pc.sp_handler
    assert pc.data_parallel_size == 2 and h.sp_disable_in_eval and not h.sp_allow_recurrent_layers


def test_ring_context_parallelism_with_packing_is_refused(tmp_path):
    text = _sp_failures(tmp_path, {"PARALLELISM_CONFIG_CP_SIZE": "2"}, **{"train.packing": True})
    assert "ring context parallelism" in text and "train.sequence_parallel" in text
    text = _sp_failures(tmp_path, {"PARALLELISM_CONFIG_SP_SIZE": "4"}, **{"train.sequence_parallel": 2,
                                                                         "train.packing": False})
    assert "sp_size 4" in text and "train.sequence_parallel 2" in text


def test_openr1_distill_7b_hyperparameters():
    t = load_recipe(ROOT / "recipes/sft/qwen2.5-math-7b.yaml").train
    assert (t.learning_rate, t.lr_scheduler, t.min_lr_rate, t.epochs, t.max_grad_norm, t.max_length) == (
        4e-5, "cosine_with_min_lr", 0.1, 5, 0.2, 32768)


def test_llama3_template_passes_preflight(tok):
    _with(tok, ROOT / "recipes/templates/llama3.jinja", LLAMA_SPECIALS)
    assert _pf(tok, ("prompt.template=r1", "prompt.force_think=true")).ok


@pytest.mark.parametrize("path", sorted((ROOT / "recipes/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.value in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert cfg.mixed_precision.value == "bf16" if hasattr(cfg.mixed_precision, "value") else cfg.mixed_precision == "bf16"
    raw = yaml.safe_load(path.read_text())
    if raw["distributed_type"] == "DEEPSPEED":
        assert raw["deepspeed_config"]["zero_stage"] in (2, 3)
        if raw["deepspeed_config"]["zero_stage"] == 3:
            assert raw["deepspeed_config"]["zero3_save_16bit_model"] is True  # the student saves as full weights


def test_the_fsdp2_config_shards_decoder_layers_and_saves_whole_weights(monkeypatch, tiny_student):
    """FSDP does not run on CPU (accelerate runs it as DDP there, and distill refuses that launch:
    tests/test_launch.py), so its configuration is checked as accelerate reads it: launch arguments ->
    environment -> FSDP plugin -> the wrap policy on a real student."""
    import functools

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoModelForCausalLM

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "recipes/accelerate/fsdp2.yaml"), "x.py"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")  # save_model gathers a whole student
    assert plugin.cpu_ram_efficient_loading and not plugin.activation_checkpointing  # the recipe's key does that
    model = AutoModelForCausalLM.from_pretrained(tiny_student)
    plugin.set_auto_wrap_policy(model)
    policy = plugin.auto_wrap_policy
    assert isinstance(policy, functools.partial)
    assert {c.__name__ for c in policy.keywords["transformer_layer_cls"]} == {"LlamaDecoderLayer"}


def test_slurm_example_passes_rank_and_rendezvous():
    text = (ROOT / "recipes/accelerate/slurm.sbatch").read_text()
    for flag in ("--machine_rank \\$SLURM_PROCID", "--main_process_ip", "--num_machines", "--rdzv_backend c10d",
                 "-m distill train"):
        assert flag in text
    assert subprocess.run(["bash", "-n", str(ROOT / "recipes/accelerate/slurm.sbatch")]).returncode == 0


def test_missing_logger_fails_before_loading(tmp_path, tiny_student, monkeypatch):
    import importlib.util

    from distill.train.sft import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(TrainDataError, match="report_to names wandb, which is not installed: pip install wandb"):
        train(_recipe(tiny_student, **{"train.report_to": "[wandb]"}), data=_data(tmp_path), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_training_progress_reaches_a_log_file(tmp_path, tiny_student):
    """stderr not a terminal: plain `train steps: i/N` lines, no tqdm carriage returns."""
    import os

    cmd = [sys.executable, "-m", "distill", "train", "--set", f"train.model={tiny_student}", "--set",
           "prompt.template=plain", "--set", "train.max_steps=3", "--set", "train.save_strategy=no", "--set",
           "train.warmup=0", "--set", "train.max_length=128", "--data", str(_data(tmp_path)), "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DISTILL_PROGRESS_SECONDS": "0"},
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [x for x in r.stderr.splitlines() if x.startswith("train steps: ")]
    assert steps and steps[-1].startswith("train steps: 3/3"), r.stderr[-3000:]
    assert "\r" not in r.stderr


def test_the_ulysses_gradient_divisor_is_deepspeeds_for_each_zero_layout(tmp_path):
    """What DeepSpeed 0.19 divides the summed gradients by: the data-parallel groups under ZeRO-0/1/2, every rank
    under ZeRO-3 with reduce-scatter; ZeRO-3 without it mixes both, which is refused, as is a launch asking for it."""
    from distill.train.ulysses import gradient_divisor, launched_zero3_without_reduce_scatter

    assert [gradient_divisor(s, True, 8, 2) for s in (0, 1, 2, 3)] == [4, 4, 4, 8]
    assert gradient_divisor(2, False, 8, 4) == 2
    with pytest.raises(ValueError, match="reduce_scatter: false"):
        gradient_divisor(3, False, 8, 2)
    env = {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    assert not launched_zero3_without_reduce_scatter(env)
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3, "reduce_scatter": False}}))
    assert launched_zero3_without_reduce_scatter({"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(tmp_path / "ds.json")})
    (tmp_path / "ds.yaml").write_text("zero_optimization:\n  stage: 2\n  reduce_scatter: false\n")
    assert not launched_zero3_without_reduce_scatter({"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(tmp_path / "ds.yaml")})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        launched_zero3_without_reduce_scatter({"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(tmp_path / "bad.json")})


def test_dpo_on_the_filters_pairs_raises_the_reward_margin(tmp_path):
    """`train.method: dpo`: TRL's DPOTrainer on pairs.jsonl from `distill filter` (export.pairs), through the
    SFT stage's loading and saving: the logged reward margin (chosen minus rejected, against the frozen start)
    starts at 0 and rises, and the saved student loads."""
    from transformers import AutoModelForCausalLM

    from distill.config import ExportConfig, FilterConfig
    from distill.filter import filter_samples
    from distill.train.dpo import train_dpo
    from tests.conftest import tiny_llama

    good = "<think>\n{a} + {b} = {c}. Check: {c} - {b} = {a}.\n</think>\n\nThe answer is $\\boxed{{{c}}}$."
    rows = []
    for p in range(12):
        a, b = p % 9 + 1, (p * 5) % 9 + 1
        for i, c in enumerate((a + b, a + b + 1, a + b, a + b + 2)):
            rows.append({"problem_id": f"p{p}", "sample_index": i, "problem": f"What is {a} + {b}?",
                         "answer": str(a + b), "completion": good.format(a=a, b=b, c=c), "finish_reason": "stop"})
    inp = tmp_path / "samples.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FilterConfig.model_validate({"workers": 0, "dedup": {"enabled": False}, "readable": {"enabled": False},
                                       "language": {"enabled": False}})
    rep = filter_samples(inp, tmp_path / "filtered", cfg, ExportConfig.model_validate({"pairs": {"enabled": True}}),
                         progress=False)
    assert rep["pairs"] == {"pairs": 24, "problems": 12}
    student = tiny_llama(tmp_path / "student")
    r = _recipe(student, **{"train.method": "dpo", "train.max_steps": None, "train.epochs": 1,
                            "train.per_device_batch_size": 4, "train.learning_rate": 5e-3})
    d = train_dpo(r, tmp_path / "filtered", tmp_path / "out")
    log = json.loads((tmp_path / "out" / "train_summary.json").read_text())["log"]
    margins = [x["rewards/margins"] for x in log if "rewards/margins" in x]
    assert d["steps"] == 6 and len(margins) == 6 and abs(margins[0]) < 1e-6  # the policy starts as its reference
    assert margins[-1] > 0.05 and margins[-1] > max(margins[:2]), margins
    assert (tmp_path / "out" / "margins.png").stat().st_size > 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with pytest.raises(Exception, match="no preference pairs"):
        train_dpo(r, tmp_path, tmp_path / "out2")
