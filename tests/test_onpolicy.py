"""On-policy distillation (`distill onpolicy`): the preflight refuses what cannot work before any weights load,
and a real TRL DistillationTrainer run trains a student towards a teacher, logged and saved like the other arms."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_llama


def _weightless(src: Path, dest: Path, **config) -> Path:
    """A model directory with the config and tokenizer of `src` and NO weights: a preflight that tried to load
    weights from it would fail with a load error, not the refusal the tests expect."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            shutil.copy(f, dest / f.name)
    c = json.loads((dest / "config.json").read_text())
    c.update(config)
    (dest / "config.json").write_text(json.dumps(c))
    return dest


@pytest.fixture(scope="module")
def embedded_dir():
    from distill.models import resolve_model

    return Path(resolve_model("embedded").path)


def _recipe(student, teacher, **over):
    from distill.config import load_recipe

    sets = {"problems.task": "arithmetic", "problems.count": 8, "prompt.template": "plain",
            "onpolicy.model": str(student), "onpolicy.teacher": str(teacher), "onpolicy.max_completion_length": 16,
            "onpolicy.per_device_batch_size": 4, "onpolicy.max_steps": 2, "onpolicy.save_strategy": "no",
            "onpolicy.gradient_checkpointing": "false", "onpolicy.reward_workers": 0}
    sets.update(over)
    return load_recipe(None, [f"{k}={v}" for k, v in sets.items()])


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "distill", "onpolicy", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_a_teacher_of_another_vocabulary_is_refused_before_weights_load(embedded_dir, tmp_path):
    teacher = _weightless(embedded_dir, tmp_path / "qwen-sized", vocab_size=151936)
    r = _cli("--set", "problems.task=arithmetic", "--set", f"onpolicy.teacher={teacher}", "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    msg = " ".join((r.stdout + r.stderr).split())
    assert "49152" in msg and "151936" in msg and str(teacher) in msg and "embedded" in msg
    assert "GOLD" in msg and "same vocab_size" in msg  # the fixes
    assert "Traceback" not in r.stderr


def test_same_size_but_other_spellings_is_refused_unless_the_student_takes_the_teachers_tokenizer(embedded_dir, tmp_path):
    from distill.train.examples import PreflightError
    from distill.train.onpolicy import preflight

    teacher = _weightless(embedded_dir, tmp_path / "respelled")
    # what R1-Distill-Qwen did to Qwen2.5's specials: the same ids, other tokens (<|im_start|> -> <｜User｜>)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        p = teacher / name
        if p.is_file():
            p.write_text(p.read_text().replace("<|im_start|>", "<｜User｜>"))
    with pytest.raises(PreflightError) as e:
        preflight(_recipe("embedded", teacher))
    msg = str(e.value)
    assert "spell 1 of them differently" in msg and "<|im_start|>" in msg and "<｜User｜>" in msg
    assert "onpolicy.tokenizer=teacher" in msg
    pair, tok = preflight(_recipe("embedded", teacher, **{"onpolicy.tokenizer": "teacher"}))  # still no weights
    assert pair.differing_ids == 1 and "<｜User｜>" in tok.get_vocab()


def test_prompts_longer_than_the_context_are_refused_with_a_length_that_fits(tmp_path):
    from distill.train.examples import PreflightError
    from distill.train.grpo import build_dataset
    from distill.train.onpolicy import check_context, preflight

    student = tiny_llama(tmp_path / "s", max_positions=64)
    teacher = tiny_llama(tmp_path / "t", seed=1, max_positions=512)
    r = _recipe(student, teacher, **{"onpolicy.max_completion_length": 60})
    pair, tok = preflight(r)
    assert pair.context == 64  # the shorter of the two
    ds, _ = build_dataset(r, tok, stage="onpolicy")
    with pytest.raises(PreflightError) as e:
        check_context(ds, tok, r.onpolicy, pair.context)
    msg = str(e.value)
    longest = max(len(tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"]) for row in ds)
    assert "context of 64 tokens" in msg and f"onpolicy.max_completion_length={64 - longest}" in msg
    assert check_context(ds, tok, r.onpolicy.model_copy(update={"max_completion_length": 64 - longest}), 64) == longest


def test_a_teacher_that_does_not_fit_is_refused_with_the_memory_arithmetic(monkeypatch):
    """Published shapes: an R1-Distill-Qwen-32B teacher beside a Qwen2.5-7B student on one 80 GB GPU."""
    from transformers import Qwen2Config

    from distill.config import OnPolicyConfig
    from distill.train.examples import PreflightError
    from distill.train.onpolicy import Pair, _params, check_memory

    q32 = Qwen2Config(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                      num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False)
    q7 = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)
    pair = Pair("qwen2.5-7b", "r1-distill-qwen-32b", _params(q7), _params(q32), 152064, 131072, "student")
    assert 7.5e9 < pair.student_params < 7.7e9 and 32.7e9 < pair.teacher_params < 32.8e9
    cfg = OnPolicyConfig(model="qwen2.5-7b", teacher="r1-distill-qwen-32b")
    with pytest.raises(PreflightError) as e:
        check_memory(pair, cfg, "cuda", available=(80e9, "free on a test GPU"))
    msg = str(e.value)
    # 32.76B x 2 bytes = 65.5 GB; 7.62B x (2 + 2 + 8) bytes = 91.4 GB; 156.9 GB > 80 GB
    assert "x 2 bytes = 65.5 GB" in msg and "= 91.4 GB" in msg and "156.9 GB" in msg and "80.0 GB" in msg
    assert "lora" in msg and "zero3.yaml" in msg
    lora = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"enabled": True})})
    need = check_memory(pair, lora, "cuda", available=(141e9, "free on an H200"))  # LoRA fits one 141 GB GPU
    assert 80e9 < need["total"] < 82e9
    # ZeRO-3 over 8 GPUs: (65.5 + 91.4) / 8 = 19.6 GB a device; with lmbda < 1 the teacher generates, gathered
    # whole on every device: 65.5 + 91.4 / 8 = 77.0 GB, refused on 64 GB with the reason
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert 19e9 < check_memory(pair, cfg, "cuda", available=(64e9, "free"))["total"] < 20e9
    mixed = cfg.model_copy(update={"lmbda": 0.5})
    with pytest.raises(PreflightError) as e:
        check_memory(pair, mixed, "cuda", available=(64e9, "free"))
    assert "77.0 GB" in str(e.value) and "the teacher whole" in str(e.value) and "onpolicy.lmbda: 1" in str(e.value)


def test_onpolicy_recipes_validate():
    from distill.config import load_recipe

    paths = sorted((ROOT / "recipes" / "onpolicy").glob("*.yaml"))
    assert len(paths) >= 3
    for p in paths:
        r = load_recipe(p)
        assert r.onpolicy.teacher and r.problems is not None and r.onpolicy.beta == 1.0


@pytest.mark.slow
def test_a_real_onpolicy_run_moves_the_student_towards_the_teacher(tmp_path):
    """Two random Llamas of one vocabulary: the student samples, the teacher scores, TRL's reverse-KL loss trains.
    The reverse KL is logged at every step; the student's own samples are scored by the verifier; the student is
    saved like every distill student, with the end of turn as EOS; the ledger counts the three items."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.train.onpolicy import train_onpolicy

    student = tiny_llama(tmp_path / "s", seed=0)
    teacher = tiny_llama(tmp_path / "t", seed=1)
    r = _recipe(student, teacher, **{"onpolicy.max_steps": 6, "onpolicy.learning_rate": 3e-3,
                                     "onpolicy.per_device_batch_size": 4, "onpolicy.max_completion_length": 12})
    s = train_onpolicy(r, out=tmp_path / "out", resume=False)
    steps = [x for x in s.log if "loss" in x]
    assert len(steps) == 6
    kls = [x["reverse_kl"] for x in steps]
    assert all(k > 0 for k in kls)
    assert abs(steps[0]["loss"] - kls[0]) < 1e-3 * max(1.0, kls[0])  # beta 1: the loss is the reverse KL
    assert sum(kls[-2:]) < sum(kls[:2])  # the student moved towards the teacher
    assert all("verifier/accuracy" in x and "verifier/format" in x for x in steps)
    assert all(0 <= x["completions/clipped_ratio"] <= 1 for x in steps)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["stage"] == "onpolicy" and summary["summary"]["tokens"] > 0
    fl = summary["summary"]["flops"]
    assert fl["teacher forward"] == pytest.approx(2 * s.teacher_params * s.tokens)
    assert fl["student forward/backward"] == pytest.approx(3 * fl["student generation"])
    assert (tmp_path / "out" / "onpolicy.png").stat().st_size > 0
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    orig = AutoModelForCausalLM.from_pretrained(student)
    assert not torch.equal(m.model.norm.weight, orig.model.norm.weight)
    eos = m.generation_config.eos_token_id
    assert 2 in (eos if isinstance(eos, list) else [eos])  # <|im_end|>, the template's end of turn


@pytest.mark.slow
def test_onpolicy_with_beta_between_logs_the_reverse_kl_separately_and_lora_merges(tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.train.onpolicy import train_onpolicy

    student = tiny_llama(tmp_path / "s", seed=0)
    teacher = tiny_llama(tmp_path / "t", seed=1)
    r = _recipe(student, teacher, **{"onpolicy.beta": 0.5, "onpolicy.lora.enabled": "true",
                                     "onpolicy.lora.merge": "true", "onpolicy.lora.r": 4})
    s = train_onpolicy(r, out=tmp_path / "out", resume=False)
    steps = [x for x in s.log if "loss" in x]
    # JSD(0.5) is bounded by ln 2 and smaller than the reverse KL of two random models
    assert all(0 < x["loss"] < 0.7 and x["reverse_kl"] > x["loss"] for x in steps)
    assert (tmp_path / "out" / "adapter").is_dir()
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # merged full weights load as is


@pytest.mark.slow
def test_lmbda_below_one_lets_the_teacher_sample_some_steps_and_logs_them_apart(tmp_path):
    """onpolicy.lmbda (GKD's lambda): on the steps the schedule gives the teacher, the teacher's own generate()
    makes the completions and the student's is not called; the student's own-sample logs (reverse_kl, verifier/*,
    completions/*) are missing on those steps and teacher_samples/* carry them; the ledger counts the teacher's
    generation."""
    from distill.compute import onpolicy_flops
    from distill.train.grpo import build_dataset
    from distill.train.onpolicy import build_trainer, preflight

    student = tiny_llama(tmp_path / "s", seed=0)
    teacher = tiny_llama(tmp_path / "t", seed=1)
    r = _recipe(student, teacher, **{"onpolicy.max_steps": 8, "onpolicy.lmbda": 0.5, "onpolicy.seed": 3,
                                     "onpolicy.max_completion_length": 8})
    pair, tok = preflight(r)
    ds, _ = build_dataset(r, tok, stage="onpolicy")
    trainer = build_trainer(r, pair, ds, tok, tmp_path / "out")
    calls = {"student": 0, "teacher": 0}
    betas = {"student": set(), "teacher": set()}  # the divergence TRL's loss uses for that batch
    for who, m in (("student", trainer.model), ("teacher", trainer.teacher_model)):
        real = m.generate

        def spy(*a, _real=real, _who=who, **kw):
            calls[_who] += 1
            betas[_who].add(trainer.beta)
            return _real(*a, **kw)

        m.generate = spy
    trainer.train()
    steps = [x for x in trainer.state.log_history if "loss" in x]
    assert len(steps) == 8
    by_teacher = [x["teacher_sampled"] == 1.0 for x in steps]
    assert 0 < sum(by_teacher) < 8  # both samplers ran (seed 3)
    assert calls == {"student": 8 - sum(by_teacher), "teacher": sum(by_teacher)}
    assert betas == {"student": {1.0}, "teacher": {0.0}}  # forward KL on the teacher's samples (teacher_samples_beta)
    for x, t in zip(steps, by_teacher, strict=True):
        if t:
            assert all(x.get(k) is None for k in ("reverse_kl", "verifier/accuracy", "completions/mean_length"))
            assert x["teacher_samples/reverse_kl"] > 0 and "teacher_samples/completions/mean_length" in x
        else:
            assert x["reverse_kl"] > 0 and x["verifier/accuracy"] is not None
            assert abs(x["loss"] - x["reverse_kl"]) < 1e-3 * max(1.0, x["loss"])  # beta 1 on its own samples
            assert x.get("teacher_samples/reverse_kl") is None
    # the schedule is a function of (seed, step): a second trainer draws the same one
    again = build_trainer(r, pair, ds, tok, tmp_path / "out2")
    for step, t in enumerate(by_teacher):
        again.state.global_step = step
        assert again.teacher_samples_now() == t
    got = trainer.sampled_tokens
    assert got["teacher"] > 0 and got["student"] > 0
    share = got["teacher"] / sum(got.values())
    fl = onpolicy_flops(pair.student_params, pair.teacher_params, sum(got.values()), share)
    assert fl["teacher generation"] == pytest.approx(2 * pair.teacher_params * got["teacher"])
    assert fl["student generation"] == pytest.approx(2 * pair.student_params * got["student"])


def test_a_missing_teacher_path_names_its_key(tmp_path):
    from distill.config import load_recipe
    from distill.models import ModelError
    from distill.train.onpolicy import preflight

    r = load_recipe(Path(__file__).resolve().parents[1] / "recipes/onpolicy/quickstart.yaml",
                    [f"onpolicy.teacher={tmp_path / 'no-such-student'}"])
    with pytest.raises(ModelError, match=r"^onpolicy\.teacher: .*no such file or directory"):
        preflight(r)
