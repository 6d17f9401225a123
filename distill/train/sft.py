"""The train stage: SFT of a student on the filter's kept traces, with TRL's SFTTrainer.

    distill train --recipe R --data runs/x/filtered --out runs/x/student [--dry-run]
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m distill train --recipe R ...

Steps: read the examples, tokenize them with the loss on the assistant turn only
(distill/train/examples.py), run the preflight on the first one (stop here with --dry-run), train
(full or LoRA/QLoRA, packed by best-fit decreasing, resumed from the last checkpoint in --out), and
save a student that loads as is in transformers and vLLM: weights (LoRA merged on request),
tokenizer with the chat template it was trained through, and a generation_config.json whose EOS
is the end-of-turn token the student learned to write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import Recipe, TrainConfig, recipe_dict
from distill.console import console
from distill.train.common import (
    Speed,
    check_reporters,
    checkpoint_callback,
    choose_speed,
    common_args,
    is_main,
    layout,
    load_tokenizer,
    log_progress,
    lora_config,
    run_arm,
    speed_dict,
    write_summary,
)
from distill.train.examples import (
    PreflightError,
    TrainDataError,
    preflight,
    read_examples,
    show,
    tokenize,
)


@dataclass
class TrainSummary:
    out: str
    examples: int
    dropped_too_long: int
    tokens: int  # in the kept examples, once
    trained_tokens: int  # of those, the ones that carry loss
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    tokens_per_second: float = 0.0  # examples' tokens x epochs / training time
    first_loss: float | None = None
    final_loss: float | None = None
    mean_token_accuracy: float | None = None
    resumed_from: str | None = None
    dry_run: bool = False
    preflight_ok: bool = True
    speed: dict | None = None  # attention, kernels and checkpointing chosen (distill/train/common.py)
    layout: dict | None = None  # the launch that ran: world size, DDP/DeepSpeed/FSDP, ZeRO stage, global batch
    log: list[dict] = field(default_factory=list)

    def table(self):
        from rich.table import Table

        t = Table("metric", "value", title="distill train")
        rows = [("examples", f"{self.examples}"), ("dropped (longer than max_length)", f"{self.dropped_too_long}"),
                ("tokens (once)", f"{self.tokens}"),
                ("tokens carrying loss", f"{self.trained_tokens} ({self.trained_tokens / max(self.tokens, 1):.0%})")]
        if not self.dry_run:
            rows += [("optimizer steps", f"{self.steps}"), ("epochs", f"{self.epochs:.2f}"),
                     ("wall time", f"{self.seconds:.1f} s"), ("training tokens/s", f"{self.tokens_per_second:.0f}"),
                     ("loss first → last", f"{_f(self.first_loss)} → {_f(self.final_loss)}"),
                     ("token accuracy (last log)", _f(self.mean_token_accuracy))]
            if self.resumed_from:
                rows.append(("resumed from", self.resumed_from))
        for k, v in rows:
            t.add_row(k, v)
        return t


def _f(x):
    return "-" if x is None else f"{x:.3f}"


def prepare(recipe: Recipe, data: str | Path, tokenizer, show_preflight: bool = True):
    """(tokenized dataset, preflight, counts). Raises PreflightError when the loss mask is wrong."""
    import datasets

    cfg = recipe.train
    examples = read_examples(data)
    first = examples[0]
    pf = preflight(tokenizer, first, tokenize(tokenizer, first["prompt"], first["completion"]), recipe.prompt)
    if show_preflight:
        show(pf, console)
    if not pf.ok:
        raise PreflightError("preflight failed, nothing was trained:\n  " + "\n  ".join(pf.failures()))

    ds = datasets.Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"], "where": e["where"]}
                                     for e in examples])
    ds = ds.map(lambda e: tokenize(tokenizer, e["prompt"], e["completion"]), num_proc=cfg.dataset_num_proc,
                remove_columns=["prompt", "completion"], desc="tokenizing")
    n = len(ds)
    # A trace cut at max_length has no end of turn: training on it teaches the student not to stop.
    ds = ds.filter(lambda e: len(e["input_ids"]) <= cfg.max_length, num_proc=cfg.dataset_num_proc)
    dropped = n - len(ds)
    if len(ds) == 0:
        raise TrainDataError(f"{data}: all {n} examples are longer than train.max_length={cfg.max_length} tokens; "
                             "raise train.max_length")
    eot = pf.eot_id
    no_eot = ds.filter(lambda e: eot not in [i for i, lab in zip(e["input_ids"], e["labels"], strict=False) if lab != -100])
    if len(no_eot):
        raise PreflightError(f"{no_eot[0]['where']}: the end-of-turn token {pf.eot_token!r} carries no loss in this "
                             f"example ({len(no_eot)} such examples); check its assistant message")
    tokens = sum(len(x) for x in ds["input_ids"])
    trained = sum(sum(1 for v in lab if v != -100) for lab in ds["labels"])
    return ds.select_columns(["input_ids", "labels"]), pf, {"examples": len(ds), "dropped": dropped, "tokens": tokens,
                                                              "trained": trained}


def sft_config(cfg: TrainConfig, out: Path, speed: Speed | None = None):
    from trl import SFTConfig

    speed = speed or choose_speed(cfg, cfg.packing, training_only=True)
    args = common_args(cfg, speed)
    if cfg.use_kernels:
        args["model_init_kwargs"]["use_kernels"] = True
    args["ddp_find_unused_parameters"] = cfg.ddp_find_unused_parameters
    args["train_sampling_strategy"] = cfg.sampling
    if cfg.sequence_parallel > 1:
        args.update(sequence_parallel_args(cfg.sequence_parallel, speed.attn_implementation, cfg.max_length,
                                           speed.device))
    if speed.liger:
        # Liger's RMSNorm/SwiGLU/RoPE kernels; TRL 1.16 keeps its own fused LM head for the loss.
        args["use_liger_kernel"] = True
    return SFTConfig(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler == "cosine_with_min_lr" else None,
        run_name=cfg.run_name,
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        dataset_num_proc=cfg.dataset_num_proc,
        **args,
    )


def sequence_parallel_args(n: int, attn: str, max_length: int, device: str) -> dict:
    """Trainer arguments for Ulysses sequence parallelism over n ranks (DeepSpeed ALST through accelerate).

    The engine is DeepSpeed's: accelerate registers its attention wrapper with transformers and shards
    every batch along the sequence; TRL's collator then passes position_ids, which the wrapper gathers
    to give the attention the whole row's positions after the all-to-all. One trace a row (the preflight
    refuses packing). Rows are padded to a multiple of n; on CPU (gloo) to max_length, since DeepSpeed
    gathers each rank's batch before sharding it and gloo's all-gather takes only equal sizes."""
    import os

    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    # accelerate 1.16's settings, said: SP off in eval mode (every rank runs the whole row; SFT runs no eval
    # loop, and an eval loader is not sharded like the train one), recurrent layers refused (the preflight
    # refuses them first, before weights load)
    handler = DeepSpeedSequenceParallelConfig(sp_seq_length_is_variable=True, sp_attn_implementation=attn,
                                              sp_disable_in_eval=True, sp_allow_recurrent_layers=False)
    # The data-parallel groups, said here: accelerate 1.16 computes DeepSpeed's train_batch_size from
    # ParallelismConfig.data_parallel_size (1 unless set), and DeepSpeed refuses a batch that does not match
    # its own count of world / sp groups
    dp = max(1, int(os.environ.get("WORLD_SIZE", "1")) // n)
    pc = ParallelismConfig(sp_backend="deepspeed", sp_size=n, sp_handler=handler, dp_shard_size=dp)
    return {"parallelism_config": pc,
            "pad_to_multiple_of": max_length if device == "cpu" else n}


def sequence_parallel_speed(speed: Speed, cfg: TrainConfig, model) -> Speed:
    """Check a sequence-parallel run before any weights load, and choose the attention DeepSpeed's
    Ulysses wrapper runs inside (flash_attention_2 or sdpa: the only ones accelerate accepts).

    Raises PreflightError with every failure and its fix. The launch itself (DeepSpeed, a world size
    that N divides) is checked when launched; a one-process --dry-run checks the rest."""
    import os
    from dataclasses import replace

    from distill.train.attention import flash_attn_installed
    from distill.train.ulysses import (
        deepspeed_version_problem,
        launched_zero3_without_reduce_scatter,
        zero3_without_reduce_scatter,
    )

    n = cfg.sequence_parallel
    env_sp = os.environ.get("PARALLELISM_CONFIG_SP_SIZE")
    env_cp = int(os.environ.get("PARALLELISM_CONFIG_CP_SIZE", "1") or 1)
    fails = []
    if env_cp > 1 and cfg.packing:
        fails.append(f"the launch config asks for ring context parallelism (cp_size {env_cp}), which keeps no "
                     "boundary between packed documents (TRL refuses packing with it): use train.sequence_parallel "
                     "instead, or set train.packing: false")
    if env_sp and int(env_sp) != n:
        fails.append(f"the launch config sets parallelism_config sp_size {env_sp} and the recipe "
                     f"train.sequence_parallel {n}: set one of them (the recipe's is enough)")
    if n == 1:
        if fails:
            raise PreflightError("sequence parallelism:\n  " + "\n  ".join(fails))
        return speed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = world > 1
    if launched and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        fails.append(f"train.sequence_parallel {n} runs on DeepSpeed (Ulysses/ALST): launch with "
                     "accelerate launch --config_file recipes/accelerate/zero3.yaml (or zero2.yaml)")
    if launched and (why := deepspeed_version_problem()):
        fails.append(why)
    try:
        if launched and launched_zero3_without_reduce_scatter(os.environ):
            fails.append(zero3_without_reduce_scatter(n))
    except ValueError as e:
        fails.append(str(e))
    if launched and world % n:
        fails.append(f"{world} processes cannot be split into sequence-parallel groups of {n}: "
                     f"use a multiple of {n} processes, or train.sequence_parallel a divisor of {world}")
    if isinstance(model, str):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    else:
        config = model.config
    c = config.get_text_config()
    heads, kv = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    if heads % n:
        fails.append(f"the model has {heads} attention heads, which {n} ranks cannot share (each rank computes "
                     f"heads/{n} of them): choose train.sequence_parallel among the divisors of {heads}")
    if kv % n and n % kv:
        fails.append(f"the model has {kv} key/value heads: train.sequence_parallel must divide them or be "
                     f"a multiple of them (then they are replicated), and {n} is neither")
    recurrent = sorted({t for t in (getattr(c, "layer_types", None) or []) if "linear_attention" in str(t)})
    if recurrent:  # accelerate 1.16 refuses these too, but only once the weights are loaded
        fails.append(f"the model has {', '.join(recurrent)} layers, which carry a state along the sequence: under "
                     "Ulysses each rank would restart it on its own slice and train on wrong gradients; train "
                     "this model without train.sequence_parallel")
    if cfg.max_length % n:
        fails.append(f"train.max_length {cfg.max_length} is not a multiple of train.sequence_parallel {n}: "
                     f"each row is split into {n} equal slices; use {cfg.max_length // n * n or n}")
    if cfg.packing:
        fails.append("train.packing: true with sequence parallelism: DeepSpeed 0.19's Ulysses data loader cannot "
                     "shard the packed rows' document boundaries (cu_seq_lens) and its attention wrapper drops "
                     "the mask, so packed traces would attend to each other. Set train.packing: false (one "
                     "trace a row, padded to a multiple of N: the long traces sequence parallelism is for "
                     "fill their rows anyway)")
    asked = cfg.attn_implementation or "auto"
    if asked not in ("auto", "sdpa", "flash_attention_2", "varlen"):
        fails.append(f"attn_implementation {asked} with sequence parallelism: DeepSpeed's Ulysses wraps "
                     "flash_attention_2 or sdpa; set attn_implementation: auto")
    if fails:
        raise PreflightError(f"train.sequence_parallel {n}:\n  " + "\n  ".join(fails))
    if asked == "flash_attention_2" or (asked == "auto" and speed.device == "cuda" and flash_attn_installed()):
        core = "flash_attention_2"
    else:
        core = "sdpa"  # exact for one trace a row: causal, right padding carries no loss
    return replace(speed, attn_implementation=core, attention_kernel=f"{core} inside DeepSpeed Ulysses",
                   attention_reason=f"sequence parallelism over {n} ranks: each computes {heads // n} of "
                                    f"{heads} heads over the whole row")


def _model_init_extras(cfg: TrainConfig, path: str) -> dict:
    extras = {}
    if cfg.context.rope_theta or cfg.context.max_position_embeddings:
        from transformers import AutoConfig

        mc = AutoConfig.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        if cfg.context.rope_theta:
            rp = dict(getattr(mc, "rope_parameters", None) or {"rope_type": "default"})
            rp["rope_theta"] = cfg.context.rope_theta
            mc.rope_parameters = rp
        if cfg.context.max_position_embeddings:
            mc.max_position_embeddings = cfg.context.max_position_embeddings
        extras["config"] = mc
    if cfg.lora.enabled and cfg.lora.quantize == "4bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise PreflightError("train.lora.quantize: 4bit (QLoRA) needs bitsandbytes and a CUDA GPU: "
                                 "pip install bitsandbytes, or set train.lora.quantize: null") from None
        import torch
        from transformers import BitsAndBytesConfig

        extras["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    return extras


def exact_attention(speed: Speed, cfg: TrainConfig, model) -> Speed:
    """`varlen` only where it computes what the model's own attention does: soft-capping (Gemma-2),
    sinks (gpt-oss) and non-causal attention go to SDPA (auto), or are refused (asked by name)."""
    from dataclasses import replace

    from distill.train.attention import VARLEN, inexact_for

    if speed.attn_implementation != VARLEN:
        return speed
    if isinstance(model, str):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    else:
        config = model.config
    why = inexact_for(config, cfg.max_length)
    if why is None:
        return speed
    if cfg.attn_implementation == VARLEN:
        raise PreflightError(f"attn_implementation: varlen does not implement {why}: its logits would be wrong. "
                             "Set attn_implementation: auto (or sdpa, or flash_attention_2 where installed)")
    return replace(speed, attn_implementation="sdpa", attention_kernel="sdpa",
                   attention_reason=f"varlen does not implement {why}")


def build_trainer(recipe: Recipe, model, ds, tokenizer, out: Path, speed: Speed | None = None):
    """TRL's SFTTrainer for the recipe, on an already tokenized dataset (see prepare).

    model: a path (loaded with the recipe's dtype, attention and context settings) or a model
    instance already built (benchmarks build random models of a published shape in memory)."""
    from distill.train.ulysses import deepspeed_comm_ready, sft_trainer_class

    cfg = recipe.train
    speed = speed or choose_speed(cfg, cfg.packing, training_only=True)
    speed = exact_attention(speed, cfg, model)
    speed = sequence_parallel_speed(speed, cfg, model)
    args = sft_config(cfg, out, speed)
    if cfg.sequence_parallel > 1:
        deepspeed_comm_ready()
    if isinstance(model, str):
        args.model_init_kwargs.update(_model_init_extras(cfg, model))
    else:
        args.model_init_kwargs = None
        model.set_attn_implementation(speed.attn_implementation)
    callbacks = None
    if speed.checkpointing_auto or 0 < speed.checkpointing < 1:
        tokens = cfg.per_device_batch_size * cfg.max_length  # packed rows are up to max_length long
        callbacks = [checkpoint_callback(speed.checkpointing, speed.checkpointing_auto, tokens, speed.liger)]
    peft_config = lora_config(cfg.lora) if cfg.lora.enabled else None
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=ds, processing_class=tokenizer, peft_config=peft_config,
                         callbacks=log_progress(callbacks))
    trainer.distill_speed = speed
    return trainer


def train(recipe: Recipe, data: str | Path | None = None, out: str | Path | None = None, dry_run: bool = False,
          resume: bool = True) -> TrainSummary:
    """SFT on the filter's output. One run per output directory (distill/lock.py, rank 0 holds it)."""
    out = out or recipe.train.output_dir
    if not out or dry_run:
        return _train(recipe, data, out, dry_run, resume)
    from distill.lock import output_lock

    with output_lock(out, "distill train"):
        return _train(recipe, data, out, dry_run, resume)


def _train(recipe: Recipe, data, out, dry_run: bool, resume: bool) -> TrainSummary:
    from distill.models import resolve_model

    cfg = recipe.train
    data = data or cfg.data
    out = out or cfg.output_dir
    if not data:
        raise TrainDataError("no training data: pass --data DIR (the output of `distill filter`) or set train.data")
    if not out and not dry_run:
        raise TrainDataError("no output directory: pass --out DIR or set train.output_dir")
    check_reporters(cfg.report_to)
    speed = choose_speed(cfg, cfg.packing, training_only=True)  # an impossible choice fails before any loading
    model = resolve_model(cfg.model, cfg.revision)
    tok = load_tokenizer(model.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template)
    sequence_parallel_speed(speed, cfg, model.path)  # before the data and the weights: a launch that cannot work
    ds, pf, counts = prepare(recipe, data, tok, show_preflight=is_main())
    summary = TrainSummary(str(out), counts["examples"], counts["dropped"], counts["tokens"], counts["trained"],
                           dry_run=dry_run)
    if dry_run:
        return summary

    out = Path(out)
    trainer = build_trainer(recipe, model.path, ds, tok, out, speed)
    speed = trainer.distill_speed  # what the model's attention allows (exact_attention)
    summary.speed = speed_dict(speed)
    run = run_arm(trainer, tok, out, cfg, "packed rows" if cfg.packing else "traces", pf.eot_id, resume,
                  notes=[f"speed: {speed.describe()}"])
    ckpt, secs, result = run.resumed_from, run.seconds, run.result
    losses = [x for x in trainer.state.log_history if "loss" in x]
    summary.steps = trainer.state.global_step
    summary.epochs = float(trainer.state.epoch or 0)
    summary.seconds = secs
    done_epochs = summary.epochs - (float(_ckpt_epoch(ckpt)) if ckpt else 0.0)
    summary.tokens_per_second = counts["tokens"] * max(done_epochs, 0) / secs if secs > 0 else 0.0
    summary.first_loss = losses[0]["loss"] if losses else result.training_loss
    summary.final_loss = losses[-1]["loss"] if losses else result.training_loss
    summary.mean_token_accuracy = next((x["mean_token_accuracy"] for x in reversed(losses) if "mean_token_accuracy" in x), None)
    summary.resumed_from = ckpt
    summary.layout = layout(trainer)
    summary.log = trainer.state.log_history
    write_summary(out, "train_summary.json",
                  {"summary": {k: v for k, v in summary.__dict__.items() if k != "log"}, "log": summary.log,
                   "recipe": recipe_dict(recipe), "data": str(data), "model": model.path},
                  plot=lambda: plot_loss(summary.log, out / "loss.png"))
    return summary


def _ckpt_epoch(ckpt: str) -> float:
    try:
        return json.loads((Path(ckpt) / "trainer_state.json").read_text()).get("epoch") or 0.0
    except (OSError, ValueError):
        return 0.0


def plot_loss(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(x["step"], x["loss"]) for x in log if "loss" in x and "step" in x]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*pts, strict=False), marker="o", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("distill train")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
