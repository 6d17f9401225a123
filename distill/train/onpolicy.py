"""The on-policy distillation arm: TRL's DistillationTrainer on the recipe's problems.

    distill onpolicy --recipe recipes/onpolicy/quickstart.yaml --out runs/quick/onpolicy
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m distill onpolicy --recipe recipes/onpolicy/r1-distill-qwen-32b-to-qwen2.5-7b.yaml

The student samples one completion per prompt (the recipe's `problems` and `prompt`, built exactly as
for `distill grpo`); the teacher, held in the same processes, runs a forward pass over the student's
tokens, and the loss is TRL's generalized JSD between the two next-token distributions at every
completion position (`beta` 1: reverse KL(student || teacher)). distill writes no loss: it checks what
cannot work before any weights load (`preflight`), builds the dataset and the stop tokens as GRPO does,
logs the reverse KL and the verifier's scores of the student's own samples (never optimized), keeps the
compute ledger, and saves the student like every other arm.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import Recipe, RecipeError, recipe_dict
from distill.console import console
from distill.lock import locks_output
from distill.train.examples import PreflightError
from distill.train.grpo import _f
from distill.train.trl_seam import check, onpolicy_trainer_class

GB = 1e9


# ----------------------------------------------------------------------------------------------
# preflight: configs and tokenizers only, no weights


@dataclass
class Pair:
    """What the preflight learned about the student and the teacher from their configs and tokenizers."""

    student: str
    teacher: str
    student_params: int
    teacher_params: int
    vocab_size: int
    context: int  # the shorter of the two models' position limits
    tokenizer_from: str  # "student" or "teacher"
    differing_ids: int = 0  # ids the two tokenizers spell differently (only with tokenizer: teacher)
    memory: dict = field(default_factory=dict)
    served: object = None  # distill.train.served.TeacherServers: the teacher on servers, none in this process


def _text_config(path: str, revision: str | None, trust_remote_code: bool):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code).get_text_config()


def _params(cfg) -> int:
    """Parameters from a config alone (meta device: nothing is allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in m.parameters())


def _context(cfg) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def spelling_differences(student_tok, teacher_tok, limit: int | None = None) -> list[tuple[int, str | None, str | None]]:
    """(id, student's token, teacher's token) for every id the two tokenizers spell differently (None: the id
    is not in that tokenizer). Distillation compares the distributions id by id, so an id must mean the same
    token to both models."""
    s = {i: t for t, i in student_tok.get_vocab().items()}
    t = {i: tok for tok, i in teacher_tok.get_vocab().items()}
    out = []
    for i in sorted(set(s) | set(t)):
        if s.get(i) != t.get(i):
            out.append((i, s.get(i), t.get(i)))
            if limit and len(out) >= limit:
                break
    return out


def check_vocab_size(student: str, teacher: str, s_cfg, t_cfg) -> None:
    """Refuse a pair whose next-token distributions have different sizes (configs only)."""
    if s_cfg.vocab_size != t_cfg.vocab_size:
        raise PreflightError(
            f"onpolicy: the student {student} has a vocabulary of {s_cfg.vocab_size} ids and the teacher {teacher} "
            f"of {t_cfg.vocab_size}: on-policy distillation compares the two next-token distributions id by id, so "
            "both must be defined over the same vocabulary. Fix: a teacher of the student's family with the same "
            "vocab_size (docs/training.md, 'On-policy distillation', lists the R1 pairs that qualify), or for a "
            "cross-tokenizer pair TRL's experimental GOLD trainer (trl.experimental.gold), or distill the teacher's "
            "traces by SFT instead (distill generate + filter + train), which needs no shared vocabulary.")


def check_spellings(student: str, teacher: str, s_cfg, s_tok, t_tok, tokenizer_from: str) -> int:
    """Refuse a pair whose tokenizers give one id to different tokens; returns the number of such ids (accepted
    only when the student reads and writes with the teacher's tokenizer)."""
    diff = spelling_differences(s_tok, t_tok)
    if not diff:
        return 0
    shown = ", ".join(f"{i}: {a!r} vs {b!r}" for i, a, b in diff[:4])
    if tokenizer_from == "teacher":
        # the student now reads and writes the teacher's ids; those must exist in the student's embedding
        top = max(t_tok.get_vocab().values())
        if top >= s_cfg.vocab_size:
            raise PreflightError(f"onpolicy: the teacher's tokenizer uses id {top}, beyond the student's "
                                 f"{s_cfg.vocab_size} embeddings: this pair cannot share the teacher's tokenizer")
        return len(diff)
    raise PreflightError(
        f"onpolicy: the student {student} and the teacher {teacher} both have {s_cfg.vocab_size} ids, but their "
        f"tokenizers spell {len(diff)} of them differently (id: student vs teacher: {shown}{', ...' if len(diff) > 4 else ''}). "
        "The teacher would read the student's tokens as other tokens. Fix: --set onpolicy.tokenizer=teacher (the "
        "student reads and writes with the teacher's tokenizer and chat template, as the R1-Distill students were "
        "trained), or a teacher whose tokenizer matches.")


def memory_need(student_params: int, teacher_params: int, student_bytes: int, teacher_bytes: int, lora: bool,
                shards: int = 1, teacher_generates: bool = False) -> dict:
    """Bytes the weights and the optimizer need on one device, before activations.

    Full training keeps the student's weights and gradients in the training dtype and AdamW's two moments
    in fp32 (4 + 4 bytes a parameter); LoRA trains ~1% of the parameters. `shards`: processes the student
    state and the teacher are partitioned over (ZeRO-3 / FSDP), 1 otherwise. `teacher_generates`
    (onpolicy.lmbda < 1): the teacher's HF generation gathers its whole weights on every device, so the peak
    holds the whole teacher beside the student's shard."""
    teacher = teacher_params * teacher_bytes
    if lora:
        student = student_params * student_bytes + 0.01 * student_params * (student_bytes + 8)
        how = f"{student_bytes} bytes a weight + LoRA adapters with their gradients and AdamW moments (~1%)"
    else:
        student = student_params * (2 * student_bytes + 8)
        how = f"{student_bytes}-byte weights and gradients + 8 bytes of fp32 AdamW moments a parameter"
    t_dev = teacher if teacher_generates else teacher / shards
    return {"teacher": t_dev, "student": student / shards, "total": t_dev + student / shards,
            "student_how": how, "shards": shards, "teacher_gathered": teacher_generates and shards > 1}


def available_memory() -> tuple[float, str]:
    """(bytes, where) this process can use for the two models: free GPU memory, or the host's available RAM."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return float(free), f"free on {torch.cuda.get_device_name()} (cuda:{torch.cuda.current_device()})"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024, "available RAM on this host"
    except OSError:
        pass
    return math.inf, "memory (unknown)"


def _bytes(dtype: str, device: str) -> int:
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return 4 if dtype == "float32" else 2


def _shards() -> int:
    """The student state and teacher are partitioned over the world under ZeRO-3 or FSDP."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    return world if (zero3 or fsdp) else 1


def check_memory(pair: Pair, cfg, device: str, available: tuple[float, str] | None = None) -> dict:
    # a served teacher takes nothing on the training devices
    need = memory_need(pair.student_params, 0 if pair.served else pair.teacher_params, _bytes(cfg.dtype, device),
                       _bytes(cfg.teacher_dtype if cfg.teacher_dtype != "auto" else cfg.dtype, device),
                       cfg.lora.enabled, _shards(), teacher_generates=cfg.lmbda < 1 and not pair.served)
    have, where = available or available_memory()
    need["available"], need["where"] = have, where
    if cfg.check_memory and need["total"] > have:
        tb = _bytes(cfg.teacher_dtype if cfg.teacher_dtype != "auto" else cfg.dtype, device)
        sh = f" / {need['shards']} shards" if need["shards"] > 1 else ""
        if need["teacher_gathered"]:
            sh = (f" (the student / {need['shards']} shards; the teacher whole, as onpolicy.lmbda < 1 gathers it on "
                  "every device to generate: onpolicy.lmbda: 1, or an SFT'd student that needs no teacher samples)")
        raise PreflightError(
            f"onpolicy: the teacher does not fit beside the student: teacher {pair.teacher_params / 1e9:.2f}B "
            f"parameters x {tb} bytes = {pair.teacher_params * tb / GB:.1f} GB, student "
            f"{pair.student_params / 1e9:.2f}B parameters ({need['student_how']}) = "
            f"{need['student'] * need['shards'] / GB:.1f} GB; together {need['total'] / GB:.1f} GB{sh} before "
            f"activations, and {have / GB:.1f} GB is {where}. Fixes: LoRA on the student (onpolicy.lora.enabled: "
            "true), a launch that shards both over GPUs (accelerate launch --config_file "
            "recipes/accelerate/zero3.yaml), a bf16 teacher (onpolicy.teacher_dtype: bfloat16), or a smaller "
            "teacher; onpolicy.check_memory: false skips this check")
    return need


def check_context(ds, tokenizer, cfg, context: int) -> int:
    """Refuse prompts that leave no room for max_completion_length inside the shorter context; returns the
    longest prompt's length in tokens."""
    longest, worst, over = 0, None, 0
    for row in ds:
        p = row["prompt"]
        if isinstance(p, str):
            n = len(tokenizer(p, add_special_tokens=True)["input_ids"])
        else:
            n = len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        if n + cfg.max_completion_length > context:
            over += 1
        if n > longest:
            longest, worst = n, row["problem_id"]
    if over:
        room = context - longest
        fix = (f"--set onpolicy.max_completion_length={room}" if room > 0 else
               "shorter problems (problems.limit / a filtered source)")
        raise PreflightError(
            f"onpolicy: {over} prompt(s) plus max_completion_length {cfg.max_completion_length} exceed the context of "
            f"{context} tokens (the shorter of the student's and the teacher's position limits); the longest prompt "
            f"is problem {worst!r} with {longest} tokens. Fix: {fix}, or leave those problems out")
    return longest


def _resolve(key: str, ref: str, revision: str | None):
    """resolve_model, with the recipe key in the message (two models are named here: which one is wrong?)."""
    from distill.models import ModelError, resolve_model

    try:
        return resolve_model(ref, revision)
    except ModelError as e:
        raise ModelError(f"{key}: {e}") from None


def _student(cfg):
    """The student's resolved model, text config and tokenizer (configs and tokenizers only)."""
    from distill.train.common import load_tokenizer

    s_model = _resolve("onpolicy.model", cfg.model, cfg.revision)
    s_cfg = _text_config(s_model.path, cfg.revision, cfg.trust_remote_code)
    return s_model, s_cfg, load_tokenizer(s_model.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template)


def _teacher_checks(cfg, key: str, ref: str, revision: str | None, s_cfg, s_tok):
    """One teacher's config and tokenizer (no weights) against the student's: the vocabulary size and the id-by-id
    spellings, for an in-process teacher and for each served one alike. Returns (model, text config, tokenizer,
    ids spelled differently)."""
    from distill.train.common import load_tokenizer

    t_model = _resolve(key, ref, revision)
    t_cfg = _text_config(t_model.path, revision, cfg.trust_remote_code)
    check_vocab_size(cfg.model, ref, s_cfg, t_cfg)
    t_tok = load_tokenizer(t_model.path, revision, cfg.trust_remote_code, cfg.chat_template)
    return t_model, t_cfg, t_tok, check_spellings(cfg.model, ref, s_cfg, s_tok, t_tok, cfg.tokenizer)


def preflight(recipe: Recipe) -> tuple[Pair, object]:
    """Everything that can be refused from configs and tokenizers, before any weights load.
    Returns the pair and the tokenizer the student uses."""
    from distill.train.common import device_kind

    check("onpolicy")  # TRL's internals that the overrides rely on, before anything loads
    cfg = recipe.onpolicy
    if cfg.served:
        return _preflight_served(recipe)
    if not cfg.teacher:
        raise RecipeError("onpolicy.teacher is not set: name the teacher (a local directory, `embedded`, a .gguf "
                          "file or a hub id), e.g. --set onpolicy.teacher=runs/quick/student")
    s_model, s_cfg, s_tok = _student(cfg)
    t_model, t_cfg, t_tok, differing = _teacher_checks(cfg, "onpolicy.teacher", cfg.teacher, cfg.teacher_revision,
                                                       s_cfg, s_tok)
    tok = t_tok if cfg.tokenizer == "teacher" else s_tok
    contexts = [c for c in (cfg.context.max_position_embeddings or _context(s_cfg), _context(t_cfg)) if c]
    pair = Pair(s_model.path, t_model.path, _params(s_cfg), _params(t_cfg), s_cfg.vocab_size,
                min(contexts) if contexts else 1 << 30, cfg.tokenizer, differing)
    pair.memory = check_memory(pair, cfg, device_kind())
    return pair, tok


# logit transforms TRL applies in its in-process loss and the served loss does not (none of Qwen, Llama, SmolLM)
LOGIT_TRANSFORMS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling", "final_logit_softcapping")


def _preflight_served(recipe: Recipe) -> tuple[Pair, object]:
    """The preflight for served teachers: each server answers and serves its model; each teacher's checkpoint
    (config and tokenizer, no weights) has the student's vocabulary and spellings; a scoring request at the
    configured top-k goes through; the memory counts no teacher."""
    from distill.train.common import device_kind
    from distill.train.served import TeacherServers

    cfg = recipe.onpolicy
    s_model, s_cfg, s_tok = _student(cfg)
    if used := [k for k in LOGIT_TRANSFORMS if getattr(s_cfg, k, None) not in (None, 1, 1.0)]:
        raise PreflightError(f"onpolicy.teacher_servers: the student {cfg.model} transforms its logits ({', '.join(used)}), "
                             "which the served loss does not apply; distill it from an in-process teacher")
    servers = TeacherServers(cfg)
    servers.describe()
    tok, differing, contexts, params = s_tok, 0, [cfg.context.max_position_embeddings or _context(s_cfg)], []
    for entry in cfg.teacher_servers:
        t = servers.teachers[entry.name]
        ref = entry.checkpoint or cfg.teacher or (t.root if t.root and Path(t.root).exists() else None)
        if not ref:
            raise PreflightError(
                f"onpolicy.teacher_servers {entry.name!r}: the server serves {t.root or t.model!r}, which is not a path "
                "on this machine; name the checkpoint (`checkpoint:` a hub id or a local copy of its config and "
                "tokenizer) so its vocabulary can be checked against the student's before training")
        t_model, t_cfg, t_tok, diff = _teacher_checks(cfg, f"onpolicy.teacher_servers[{entry.name}].checkpoint", ref,
                                                      entry.revision or cfg.teacher_revision, s_cfg, s_tok)
        differing = max(differing, diff)
        if cfg.tokenizer == "teacher" and entry is cfg.teacher_servers[0]:
            tok = t_tok
        t.checkpoint, t.params = t_model.path, _params(t_cfg)
        params.append(t.params)
        contexts += [_context(t_cfg), t.max_model_len or None]
    probe = tok("1 + 1 = 2", add_special_tokens=True)["input_ids"]
    servers.probe(probe)
    contexts = [c for c in contexts if c]
    names = ", ".join(f"{t.name}: {t.model} at {t.url}" for t in servers.teachers.values())
    pair = Pair(s_model.path, names, _params(s_cfg), max(params), s_cfg.vocab_size,
                min(contexts) if contexts else 1 << 30, cfg.tokenizer, differing, served=servers)
    pair.memory = check_memory(pair, cfg, device_kind())
    return pair, tok


# ----------------------------------------------------------------------------------------------
# the trainer


def onpolicy_args(recipe: Recipe, out: Path, pair: Pair):
    from trl import DistillationConfig

    from distill.train.common import choose_speed, common_args, vllm_args

    cfg = recipe.onpolicy
    speed = choose_speed(cfg, packing=False, training_only=False)
    args = common_args(cfg, speed)
    t_dtype = cfg.teacher_dtype if cfg.teacher_dtype != "auto" else args["model_init_kwargs"]["dtype"]
    teacher_init = {"dtype": t_dtype, "trust_remote_code": cfg.trust_remote_code}
    if speed.attn_implementation and speed.attn_implementation not in ("auto", "varlen"):
        teacher_init["attn_implementation"] = speed.attn_implementation
    vllm = vllm_args(cfg)
    return DistillationConfig(
        output_dir=str(out),
        beta=cfg.beta,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        max_completion_length=cfg.max_completion_length,
        teacher_model_revision=cfg.teacher_revision,
        teacher_model_init_kwargs=teacher_init,
        log_completions=cfg.log_completions,
        **args,
        **vllm,
    ), speed


def build_trainer(recipe: Recipe, pair: Pair, ds, tokenizer, out: Path, callbacks=None, student=None):
    """student: a model instance built in memory (benchmarks), or None to load pair.student as GRPO loads its policy:
    TRL's loader, then the end-of-turn joins the model's EOS before TRL reads it (TRL stops rollouts there)."""
    from distill.train.common import checkpoint_callback, log_progress, lora_config
    from distill.train.grpo import stop_ids
    from distill.train.rewards import REWARDS
    from distill.train.sft import _model_init_extras
    from distill.train.trl_seam import create_model_from_path

    cfg = recipe.onpolicy
    args, speed = onpolicy_args(recipe, out, pair)
    init_kwargs = {**(args.model_init_kwargs or {}), **_model_init_extras(cfg, pair.student)}
    if student is None:
        kw = dict(init_kwargs)
        if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
            kw["device_map"] = None
        student = create_model_from_path(pair.student, **kw)
    else:
        student.set_attn_implementation(speed.attn_implementation)
    args.model_init_kwargs = None
    stops = stop_ids(tokenizer, student.generation_config.eos_token_id)
    student.generation_config.eos_token_id = stops
    if cfg.use_vllm:
        args.generation_kwargs = {**(args.generation_kwargs or {}), "stop_token_ids": stops}
    peft_config = lora_config(cfg.lora) if cfg.lora.enabled else None
    if 0 < speed.checkpointing < 1:
        callbacks = [*(callbacks or []), checkpoint_callback(speed.checkpointing)]
    cls = onpolicy_trainer_class()
    trainer = cls(model=student, teacher_model=None if pair.served else pair.teacher, args=args, train_dataset=ds,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=log_progress(callbacks),
                  distill_cfg=cfg, verifier=[(n, REWARDS[n](cfg)) for n in cfg.verifier], served=pair.served)
    trainer.distill_init_kwargs = init_kwargs  # how to load the base again for an offline LoRA merge
    trainer.distill_speed = speed
    return trainer


# ----------------------------------------------------------------------------------------------
# the run


@dataclass
class OnPolicySummary:
    out: str
    problems: int
    student: str = ""
    teacher: str = ""
    student_params: int = 0
    teacher_params: int = 0
    steps: int = 0
    seconds: float = 0.0
    completions: int = 0
    tokens: int = 0  # TRL's num_tokens: prompt + completion tokens of the samples trained on
    teacher_share: float = 0.0  # the share of those tokens the teacher sampled (onpolicy.lmbda < 1)
    first: dict = field(default_factory=dict)  # metric -> mean over the first quarter of the logged steps
    last: dict = field(default_factory=dict)  # ... and the last quarter
    flops: dict = field(default_factory=dict)  # the ledger: student generation, teacher forward, student fwd/bwd
    resumed_from: str | None = None
    log: list[dict] = field(default_factory=list)

    METRICS = ("loss", "reverse_kl", "verifier/accuracy", "verifier/format", "completions/mean_length",
               "completions/clipped_ratio", "entropy", "teacher_sampled", "teacher_samples/reverse_kl",
               "teacher_samples/verifier/accuracy")

    def table(self):
        from rich.table import Table

        t = Table("metric", "value", title="distill onpolicy")
        rows = [("student / teacher", f"{self.student_params / 1e6:.0f}M / {self.teacher_params / 1e6:.0f}M parameters"),
                ("problems", f"{self.problems}"), ("optimizer steps", f"{self.steps}"),
                ("completions sampled", f"{self.completions}"), ("tokens (prompt + completion)", f"{self.tokens}"),
                ("wall time", f"{self.seconds:.1f} s")]
        for k in self.METRICS:
            if k in self.first:
                rows.append((f"{k}, first → last quarter of steps", f"{_f(self.first[k])} → {_f(self.last.get(k))}"))
        if self.teacher_share:
            rows.append(("tokens the teacher sampled (onpolicy.lmbda < 1)", f"{self.teacher_share:.0%}"))
        rows += [(f"compute: {k}", f"{v:.3g} FLOPs") for k, v in self.flops.items()]
        if self.resumed_from:
            rows.append(("resumed from", self.resumed_from))
        for k, v in rows:
            t.add_row(k, v)
        return t


@locks_output("distill onpolicy", "onpolicy")  # one run per output directory (rank 0 holds it)
def train_onpolicy(recipe: Recipe, out: str | Path | None = None, resume: bool = True, callbacks=None) -> OnPolicySummary:
    """Run on-policy distillation from the recipe; save the student like a distill student plus train_summary.json."""
    from distill.compute import onpolicy_flops, served_teacher_flops
    from distill.train.common import check_reporters, is_main, layout, run_arm, speed_dict, write_summary
    from distill.train.examples import end_of_turn
    from distill.train.grpo import build_dataset
    from distill.train.rewards import REWARDS

    cfg = recipe.onpolicy
    out = out or cfg.output_dir
    if not out:
        raise RecipeError("no output directory: pass --out DIR or set onpolicy.output_dir")
    out = Path(out)
    unknown = [n for n in cfg.verifier if n not in REWARDS]
    if unknown:
        raise RecipeError(f"onpolicy.verifier: unknown score(s) {unknown}; known: {', '.join(REWARDS)}")
    check_reporters(cfg.report_to)
    pair, tok = preflight(recipe)
    ds, n = build_dataset(recipe, tok, stage="onpolicy")
    check_context(ds, tok, cfg, pair.context)
    routed = pair.served.check_routes(ds) if pair.served else {}
    if is_main():
        m = pair.memory
        teacher = (f"served ({pair.served.manifest()['support']}; " + ", ".join(
            f"{t.name}: {t.model} at {t.url}, {t.params / 1e6:.0f}M, {routed.get(t.name, 0)} problems"
            for t in pair.served.teachers.values()) + ")") if pair.served else \
            f"{cfg.teacher} ({pair.teacher_params / 1e6:.0f}M)"
        console.print(f"on-policy distillation: student {cfg.model} ({pair.student_params / 1e6:.0f}M), teacher "
                      f"{teacher}, vocabulary {pair.vocab_size}, tokenizer of "
                      f"the {pair.tokenizer_from}; weights + optimizer {m['total'] / GB:.1f} GB of "
                      f"{m['available'] / GB:.1f} GB {m['where']}")
    trainer = build_trainer(recipe, pair, ds, tok, out, callbacks)
    world = trainer.accelerator.num_processes
    eot, _ = end_of_turn(tok)
    run = run_arm(trainer, tok, out, cfg, "completions", eot, resume,
                  closers=[*trainer.verifier, *([pair.served] if pair.served else [])])
    ckpt = run.resumed_from
    teachers = served_manifest(pair.served, trainer) if pair.served else None
    s = OnPolicySummary(str(out), n, cfg.model, pair.teacher if pair.served else cfg.teacher, pair.student_params,
                        pair.teacher_params, steps=trainer.state.global_step, seconds=run.seconds, resumed_from=ckpt)
    s.log = trainer.state.log_history
    steps = [x for x in s.log if "loss" in x and "step" in x]
    if steps:
        q = max(1, len(steps) // 4)
        for k in OnPolicySummary.METRICS:
            a, b = _mean(steps[:q], k), _mean(steps[-q:], k)
            if a is not None:
                s.first[k], s.last[k] = a, b
        s.tokens = int(max(x.get("num_tokens", 0) for x in steps))
    s.completions = s.steps * cfg.per_device_batch_size * cfg.gradient_accumulation_steps * world
    sampled = trainer.sampled_tokens  # this process's run only (a resumed run's earlier steps: in s.tokens)
    s.teacher_share = sampled["teacher"] / max(1, sum(sampled.values()))
    s.flops = onpolicy_flops(pair.student_params, pair.teacher_params, s.tokens, s.teacher_share)
    if teachers:  # what each served teacher ran, by name, from the manifest's token counts
        s.flops = {k: v for k, v in s.flops.items() if not k.startswith("teacher")} | served_teacher_flops(
            teachers["teachers"])
    if teachers and is_main():
        (out / "teachers.json").write_text(json.dumps(teachers, indent=1))
    write_summary(out, "train_summary.json",
                  {"stage": "onpolicy", "summary": {k: v for k, v in s.__dict__.items() if k != "log"}, "log": s.log,
                   "layout": layout(trainer), "speed": speed_dict(trainer.distill_speed), "memory": pair.memory,
                   "prompt": recipe_dict(recipe.prompt), "recipe": recipe_dict(recipe), "student": pair.student,
                   "teacher": pair.teacher, "teachers": teachers},
                  plot=lambda: plot_onpolicy(s.log, out / "onpolicy.png", cfg.verifier))
    return s


def served_manifest(served, trainer) -> dict:
    """The teacher manifest (teachers.json beside the checkpoint): each served teacher, what it serves and what it
    did, summed over every training process."""
    import torch

    m = served.manifest()
    keys = ("rows", "score_requests", "scored_tokens", "forward_tokens", "sample_requests", "sampled_tokens")
    local = torch.tensor([[float(t[k]) for k in keys] for t in m["teachers"]], device=trainer.accelerator.device)
    total = trainer.accelerator.reduce(local, reduction="sum").cpu()
    for t, row in zip(m["teachers"], total.tolist(), strict=True):
        t.update({k: int(v) for k, v in zip(keys, row, strict=True)})
    return m


def _mean(rows, key):
    vals = [x[key] for x in rows if x.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def plot_onpolicy(log: list[dict], path: Path, verifier: list[str]) -> None:
    """Three panels against the optimizer step: the loss and the reverse KL to the teacher; the verifier's scores of
    the student's own samples; completion length and the share cut at max_completion_length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [x for x in log if "loss" in x and "step" in x]
    if not pts:
        return

    def series(key):
        """(steps, values) where the key was logged: with onpolicy.lmbda < 1 the student's own-sample metrics
        are missing on the steps the teacher sampled"""
        got = [(x["step"], x[key]) for x in pts if x.get(key) is not None]
        return [a for a, _ in got], [b for _, b in got]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(*series("loss"), marker="o", ms=3, label="loss (TRL's generalized JSD)")
    axes[0].plot(*series("reverse_kl"), ls="--", marker=".", label="reverse KL(student || teacher), nats/token")
    if series("teacher_samples/reverse_kl")[0]:
        axes[0].plot(*series("teacher_samples/reverse_kl"), ls="", marker="x", label="reverse KL on the teacher's samples")
    axes[0].set_title("divergence to the teacher")
    for n in verifier:
        axes[1].plot(*series(f"verifier/{n}"), marker="o", ms=3, label=n)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("verifier on the student's samples (logged only)")
    axes[2].plot(*series("completions/mean_length"), marker="o", ms=3, color="C2", label="mean length (tokens)")
    ax2 = axes[2].twinx()
    ax2.plot(*series("completions/clipped_ratio"), ls="--", color="C3", label="truncated share")
    ax2.set_ylim(-0.02, 1.02)
    axes[2].set_title("the student's completions")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle("distill onpolicy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
