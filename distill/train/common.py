"""What SFT (sft.py) and GRPO (grpo.py) share: the tokenizer with its template, the trainer
arguments, the fast path on GPUs, reporters, resuming, and saving the student.

The fast path (docs/training.md, "Speed"): `choose_speed()` decides, per install and device,
- the attention (distill/train/attention.py: flash-attn's varlen kernel, torch's varlen kernel, or
  SDPA per document; never a dense L x L mask for packed rows),
- Liger's layer kernels (RMSNorm, SwiGLU, RoPE) when `liger-kernel` is installed on a GPU. Its fused
  linear cross-entropy is not used: TRL 1.16's own fused LM head already computes the loss in tiles
  without the (tokens x vocab) logits, and TRL refuses Liger's in its place,
- activation checkpointing: off, on, or on a fraction of the decoder layers (`CheckpointLayers`),
and the choice goes into the run's summary, so a slow run says why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.train.attention import choose as choose_attention
from distill.train.examples import TrainDataError, apply_template


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False,
                   chat_template: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    apply_template(tok, chat_template)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ----------------------------------------------------------------------------------------------
# the fast path


@dataclass
class Speed:
    attn_implementation: str
    attention_kernel: str
    attention_reason: str
    liger: bool
    liger_reason: str
    checkpointing: float  # share of decoder layers whose activations are recomputed: 0, a fraction, or 1
    device: str
    checkpointing_auto: bool = False  # decided at the start of training from the GPU's free memory

    def describe(self) -> str:
        ckpt = ("off" if self.checkpointing == 0 else "all layers" if self.checkpointing == 1
                else f"{self.checkpointing:.0%} of layers")
        if self.checkpointing_auto:
            ckpt = "auto (the layers that the GPU's free memory needs, decided when training starts)"
        return (f"attention {self.attn_implementation} ({self.attention_kernel}; {self.attention_reason}); "
                f"liger {'on' if self.liger else 'off'} ({self.liger_reason}); activation checkpointing {ckpt}")


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def choose_speed(cfg, packing: bool, training_only: bool, device: str | None = None) -> Speed:
    """cfg: a TrainConfig or GrpoConfig. training_only: the model never generates (SFT)."""
    device = device or device_kind()
    attn = choose_attention(cfg.attn_implementation, device, packing, training_only)
    want = getattr(cfg, "liger", False)
    if want is True and not liger_installed():
        raise TrainDataError("liger: true needs the liger-kernel package (pip install -e .[gpu], GPU only); "
                             "or set liger: auto")
    if want is True and device != "cuda":
        raise TrainDataError("liger: true needs a CUDA GPU (its kernels are Triton); set liger: auto or false")
    if want == "auto":
        liger = device == "cuda" and liger_installed()
        why = ("installed, on a GPU" if liger else
               "not installed (pip install -e .[gpu])" if device == "cuda" else "CPU run")
    else:
        liger, why = bool(want), "as the recipe asks"
    ckpt = cfg.gradient_checkpointing
    share = (1.0 if device == "cuda" else 0.0) if ckpt == "auto" else float(ckpt)
    return Speed(attn.implementation, attn.kernel, attn.reason, liger, why, share, device,
                 checkpointing_auto=ckpt == "auto" and device == "cuda")


def checkpoint_layers(model, share: float) -> int:
    """Keep activation checkpointing on the first `share` of the decoder layers only; returns how many.

    transformers' gradient_checkpointing_enable() checkpoints every layer (one extra forward of the
    whole model, ~25% more compute). When memory allows, recomputing only part of the layers trades
    the rest of that cost for activation memory, layer by layer."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    keep = round(share * len(layers))
    for i, layer in enumerate(layers):
        if i >= keep:
            layer.gradient_checkpointing = False
    return keep


def activation_bytes_per_token_layer(hidden: int, intermediate: int, liger: bool, lora: bool = False) -> float:
    """Activations one decoder layer keeps for backward, per token, in bf16 (no checkpointing).

    Counted: the norms' inputs and outputs, q/k/v, the attention output and its softmax statistics,
    the residual stream, and the MLP's gate, up and product (Liger's SwiGLU recomputes its activation
    instead of keeping it). The constants are rounded up from a Qwen2.5-1.5B-shape run on an H100
    (docs/benchmarks.md: 102 KB a token and layer measured without Liger, 70-78 KB with; this gives
    105 and 87), so the estimate errs on the side of memory. LoRA adds the adapters' dropped-out inputs
    (about 46 KB a token and layer measured at the 7B shape)."""
    extra = 4 * hidden + 0.5 * intermediate if lora else 0
    return 2.0 * (8 * hidden + (3.5 if liger else 4.5) * intermediate + extra)


def auto_checkpoint_share(layers: int, tokens: int, per_token_layer: float, free: float, total: float,
                          pending_state: float, margin: float = 0.2) -> float:
    """The smallest share of decoder layers to recompute so that the others' activations fit.

    free: GPU bytes free when training starts; pending_state: bytes the first step still allocates
    (gradients and AdamW moments on one GPU); margin: a share of the GPU kept for the allocator's
    fragmentation, the loss tiles and the CUDA context; tokens: one micro-batch (rows x max_length)."""
    budget = free - pending_state - margin * total
    per_layer = tokens * per_token_layer
    if per_layer <= 0:
        return 0.0
    keep = max(0, min(layers, int(budget // per_layer)))
    return 1.0 - keep / layers


def checkpoint_callback(share: float, auto: bool = False, tokens: int = 0, liger: bool = False):
    """A TrainerCallback that sets the share of checkpointed layers once the Trainer has enabled checkpointing.

    auto: read the GPU's free memory at that point and leave as many layers un-checkpointed as fit
    (one GPU, DDP or ZeRO-1/2). Under ZeRO-3 or FSDP every layer stays checkpointed: parameters are
    gathered layer by layer there and the sums above do not hold."""
    from transformers import TrainerCallback

    class CheckpointLayers(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is None:
                return
            chosen = self.auto_share(args, model) if auto else share
            kept = checkpoint_layers(model, chosen)
            if is_main():
                from distill.console import console

                console.print(f"activation checkpointing: {kept} decoder layers recomputed"
                              + (" (auto, from the GPU's free memory)" if auto else ""))

        @staticmethod
        def auto_share(args, model) -> float:
            import torch
            from accelerate.state import AcceleratorState
            from accelerate.utils import DistributedType

            state = AcceleratorState()  # set up by the Trainer, whether launched by accelerate or not
            kind = state.distributed_type
            zero = state.deepspeed_plugin.zero_stage if kind == DistributedType.DEEPSPEED else 0
            if zero == 3 or kind == DistributedType.FSDP or not torch.cuda.is_available():
                return 1.0
            cfg = model.config.get_text_config()
            free, total = torch.cuda.mem_get_info()
            params = list(model.parameters())
            trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
            lora = trainable < 0.5 * sum(p.numel() * p.element_size() for p in params)
            pending = 0 if zero else 3 * trainable  # gradients + two AdamW moments, allocated at step 1
            return auto_checkpoint_share(cfg.num_hidden_layers, tokens, activation_bytes_per_token_layer(
                cfg.hidden_size, cfg.intermediate_size, liger, lora), free, total, pending)

    return CheckpointLayers()


# ----------------------------------------------------------------------------------------------
# trainer arguments


def common_args(cfg, speed: Speed | None = None) -> dict:
    """Trainer arguments a TrainConfig and a GrpoConfig spell the same way: precision, device, batch,
    optimizer, logging and saving. bf16 on GPUs and fp32 on CPUs unless the recipe names a dtype."""
    device = speed.device if speed else device_kind()
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    if speed is not None:
        ckpt = speed.checkpointing > 0
    else:
        ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing != "auto" else device == "cuda"
        ckpt = bool(ckpt)
    init = {"dtype": dtype, "revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    attn = speed.attn_implementation if speed else cfg.attn_implementation
    if attn and attn != "auto":
        init["attn_implementation"] = attn
    return dict(
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        gradient_checkpointing=ckpt,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        use_cpu=device == "cpu",
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=list(cfg.report_to) or "none",
        model_init_kwargs=init,
        # a log file gets plain lines (log_progress) instead of tqdm's carriage returns
        disable_tqdm=not _terminal(),
    )


def _terminal() -> bool:
    from distill.console import _kernel, console

    return console.is_terminal or _kernel


def log_progress(callbacks: list | None) -> list | None:
    """The trainers' progress where stderr is no terminal (Slurm, `> log 2>&1`): the callbacks with one
    added that prints `train: step/total, rate, elapsed, ETA` at distill's steady interval on rank 0."""
    if _terminal():
        return callbacks
    from transformers import TrainerCallback

    from distill.console import LogProgress

    class LogProgressCallback(TrainerCallback):
        def __init__(self):
            self.bar, self.task = None, None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar = LogProgress("train")
                self.task = self.bar.add_task("train steps", total=state.max_steps, rate="")

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
                self.bar = None

    return [*(callbacks or []), LogProgressCallback()]


def vllm_args(cfg) -> dict:
    """The vLLM generation arguments a GrpoConfig and an OnPolicyConfig spell the same way (none without use_vllm)."""
    if not cfg.use_vllm:
        return {}
    vllm = {"use_vllm": True, "vllm_mode": cfg.vllm_mode,
            "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
            "vllm_tensor_parallel_size": cfg.vllm_tensor_parallel_size}
    if cfg.vllm_server_base_url:
        vllm["vllm_server_base_url"] = cfg.vllm_server_base_url
    return vllm


def lora_config(lora):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def check_reporters(names: list[str]) -> None:
    """Fail before the model loads (minutes on a big student) when a named logger is not installed."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise TrainDataError(f"train.report_to names {', '.join(missing)}, which is not installed: "
                             f"pip install {' '.join(missing)}, or --set train.report_to=[]")


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in `out`, or None.

    The Trainer writes a checkpoint's trainer_state.json last (after the weights, the optimizer and
    every rank's RNG state), so a directory without it is one a killed run left half-written: it is
    skipped with a word, and the run resumes from the one before. (transformers' get_last_checkpoint
    takes the highest number whatever its state.)"""
    import re

    if not out.is_dir():
        return None
    found = sorted(((int(m[1]), p) for p in out.iterdir() if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))),
                   reverse=True)
    for _, path in found:
        if (path / "trainer_state.json").is_file():
            return str(path)
        if is_main():
            from distill.console import console

            console.print(f"[yellow]skipping {path}: it has no trainer_state.json (a run killed while saving it)")
    return None


# ----------------------------------------------------------------------------------------------
# the student on disk


def save_student(trainer, tokenizer, eot_id: int | None, out: Path, merge: bool) -> None:
    """Weights + tokenizer (with the chat template used) + a generation config that stops on the end of turn.

    Every rank calls this: the Trainer's save path gathers ZeRO-3 and FSDP shards, and writes on the
    main process only. With `merge`, the adapter is saved that way to <out>/adapter, then merged on
    the main process into a fresh copy of the base in the training dtype (`merge_adapter`): merging
    the training model in place would see each rank's empty ZeRO-3 shards, and would re-quantize
    a QLoRA base into packed 4-bit weights.

    The training-only attention (`varlen`) is not written to the config: the student reloads with
    transformers' default attention and can generate."""
    from transformers import GenerationConfig

    if merge:
        trainer.save_model(str(out / "adapter"))
        trainer.accelerator.wait_for_everyone()
        model = None
        if trainer.is_world_process_zero():
            init = getattr(trainer, "distill_init_kwargs", None) or trainer.args.model_init_kwargs
            model = merge_adapter(out / "adapter", init, trainer.model)
            model.save_pretrained(out)
        trainer.accelerator.wait_for_everyone()
    else:
        trainer.save_model(str(out))
        model = trainer.model
    if not trainer.is_world_process_zero():
        return
    if not merge:
        drop_tied_copy(out)
    tokenizer.save_pretrained(out)
    base = getattr(model, "generation_config", None) or GenerationConfig()
    gen = GenerationConfig.from_dict(base.to_dict())
    eos = [eot_id] if eot_id is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(out)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():  # a LoRA adapter alone (merge: false)
        return
    c = json.loads(cfg_path.read_text())
    changed = False
    if merge and c.pop("quantization_config", None) is not None:  # QLoRA loading leaves it in the base config
        changed = True
    for key in ("_attn_implementation", "attn_implementation"):
        if c.get(key) not in (None, "sdpa", "eager", "flash_attention_2"):
            c.pop(key)
            changed = True
    if changed:
        cfg_path.write_text(json.dumps(c, indent=2))


def drop_tied_copy(out: Path) -> bool:
    """Remove a saved output layer that is a copy of the tied input embeddings.

    Under DeepSpeed ZeRO-1/2, accelerate hands the Trainer a state dict of cloned tensors, so
    transformers no longer sees that lm_head and embed_tokens are one tensor and writes both: a tied
    1.5B student gains a 0.5 GB copy. It is dropped when the config ties them and the two are equal
    (only the file that holds it is rewritten); loaders tie it again."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    text = config.get("text_config") or config
    if not (text.get("tie_word_embeddings", config.get("tie_word_embeddings"))):
        return False
    index = out / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"] if index.is_file() else None
    if weight_map is None:
        if not (out / "model.safetensors").is_file():
            return False
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            weight_map = dict.fromkeys(f.keys(), "model.safetensors")
    head = next((k for k in weight_map if k.endswith("lm_head.weight")), None)
    embed = next((k for k in weight_map if k.endswith("embed_tokens.weight")), None)
    if head is None or embed is None:
        return False
    with safe_open(str(out / weight_map[head]), "pt") as f:
        head_t = f.get_tensor(head)
    with safe_open(str(out / weight_map[embed]), "pt") as f:
        import torch

        if not torch.equal(head_t, f.get_tensor(embed)):
            return False
    path = out / weight_map[head]
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != head}
        meta = f.metadata()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    if index.is_file():
        d = json.loads(index.read_text())
        d["weight_map"].pop(head, None)
        index.write_text(json.dumps(d, indent=2))
    return True


def merge_adapter(adapter: Path, init_kwargs: dict | None, trained=None):
    """A LoRA adapter merged into a fresh, unquantized copy of its base, on this process's CPU.

    The base is loaded as training loaded it (`init_kwargs`: revision, config overrides such as a
    longer context), minus the quantization, the training-only attention and the hub kernels; a QLoRA
    base comes back in bfloat16, its compute dtype. `trained` (the training model) names the base when
    the adapter's config does not, and is merged in place only when no path to a base is known (a
    model built in memory), which is exact on one process without sharding."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base = PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
    if not base and trained is not None:
        base = getattr(getattr(trained, "config", None), "name_or_path", None)
    if not base or init_kwargs is None:
        if trained is None:
            raise TrainDataError(f"{adapter}: the adapter does not name its base model; merge it by hand with PEFT")
        return trained.merge_and_unload()
    kw = {k: v for k, v in init_kwargs.items()
          if k not in ("quantization_config", "attn_implementation", "use_kernels", "device_map")}
    quantized = init_kwargs.get("quantization_config") is not None
    dtype = "bfloat16" if quantized else kw.get("dtype") or "float32"
    kw["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    with _no_zero3_init():
        model = AutoModelForCausalLM.from_pretrained(base, **kw)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


@contextlib.contextmanager
def _no_zero3_init():
    """Load whole weights on this process alone: under a ZeRO-3 launch, transformers would otherwise
    partition the model as it loads (deepspeed.zero.Init), a collective the other ranks never join."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:
        yield
        return
    ref = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


def layout(trainer) -> dict:
    """The launch layout that ran, for train_summary.json: an FSDP or ZeRO config launched where it
    cannot apply (accelerate turns FSDP on CPU into DDP) shows here as what it became."""
    acc = trainer.accelerator
    state = acc.state
    d = {"world_size": acc.num_processes, "distributed_type": str(state.distributed_type).split(".")[-1],
         "mixed_precision": str(acc.mixed_precision)}
    ds = getattr(state, "deepspeed_plugin", None)
    if ds is not None:
        d["zero_stage"] = ds.zero_stage
    fsdp = getattr(state, "fsdp_plugin", None)
    if fsdp is not None:
        d["fsdp_version"] = getattr(fsdp, "fsdp_version", None)
    pc = getattr(acc, "parallelism_config", None)
    sp = int(getattr(pc, "sp_size", 1) or 1) if pc is not None else 1
    d["sequence_parallel"] = sp
    d["data_parallel"] = acc.num_processes // sp
    d["ddp_find_unused_parameters"] = trainer.args.ddp_find_unused_parameters
    # rows an optimizer step sees: the ranks of a sequence-parallel group share each row
    d["global_batch"] = (trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
                         * acc.num_processes // sp)
    return d


def describe_layout(d: dict, per_device: int, accumulation: int, unit: str = "rows") -> str:
    """One line of the layout and its batch arithmetic, printed when training starts."""
    kind = d["distributed_type"] + (f" ZeRO-{d['zero_stage']}" if d.get("zero_stage") else "") + (
        f" FSDP{d['fsdp_version']}" if d.get("fsdp_version") else "")
    sp = d.get("sequence_parallel", 1)
    dp = d.get("data_parallel", d["world_size"])
    split = f", sequence parallel {sp} (each row over {sp} ranks)" if sp > 1 else ""
    return (f"{d['world_size']} process(es), {kind}{split}; global batch {d['global_batch']} {unit} = "
            f"{per_device} a device x {accumulation} accumulation x {dp} data-parallel")


def check_layout(trainer) -> None:
    """Stop before training when the launch asked for a sharded layout that is not what runs: accelerate
    turns an FSDP config on CPU into plain DDP without a word, which would train unsharded and save as DDP."""
    import os

    kind = str(trainer.accelerator.state.distributed_type).split(".")[-1]
    asked = ("FSDP" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else
             "DEEPSPEED" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None)
    if asked and kind != asked:
        what = f"FSDP (version {os.environ.get('FSDP_VERSION', '1')})" if asked == "FSDP" else "DeepSpeed"
        raise TrainDataError(
            f"the launch config asks for {what}, and accelerate runs this launch as {kind} with "
            f"{trainer.accelerator.num_processes} process(es): accelerate uses {what} only on GPUs"
            + (" (DeepSpeed on CPU needs DS_ACCELERATOR=cpu)" if asked == "DEEPSPEED" else "")
            + ". On CPU, launch DDP instead: torchrun --nproc_per_node N -m distill ...; on GPUs the same config shards")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("distill", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "flash-attn",
                "liger-kernel", "deepspeed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def speed_dict(speed: Speed | None) -> dict | None:
    return asdict(speed) if speed else None


@dataclass
class Run:
    """What `run_arm` did: the checkpoint it resumed from, the training time and TRL's train() result."""

    resumed_from: str | None
    seconds: float
    result: object = None


def run_arm(trainer, tokenizer, out: Path, cfg, unit: str, eot_id: int | None, resume: bool, closers=(),
            notes=()) -> Run:
    """The skeleton every training arm (sft, grpo, onpolicy) shares once its trainer is built: check the layout,
    find the checkpoint to resume, print the layout (and the arm's `notes`), train (closing `closers`, e.g. the
    verifier's worker pools, however training ends), then save the student like every other arm."""
    import time as _time

    from distill.console import console

    check_layout(trainer)
    ckpt = last_checkpoint(out) if resume else None
    if is_main():
        console.print(f"layout: {describe_layout(layout(trainer), cfg.per_device_batch_size, cfg.gradient_accumulation_steps, unit)}")
        for line in notes:
            console.print(line)
        if ckpt:
            console.print(f"resuming from {ckpt}")
    t0 = _time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=ckpt)
    finally:
        for c in closers:
            if hasattr(c, "close"):
                c.close()
    run = Run(ckpt, _time.perf_counter() - t0, result)
    save_student(trainer, tokenizer, eot_id, out, merge=cfg.lora.enabled and cfg.lora.merge)
    return run


def write_summary(out: Path, name: str, payload: dict, plot=None) -> None:
    """The arm's summary JSON (`name` in `out`, with the library versions) and its plot, from the main process."""
    if not is_main():
        return
    (out / name).write_text(json.dumps({**payload, "versions": versions()}, indent=1, default=str))
    if plot is not None:
        plot()
