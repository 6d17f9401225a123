"""The SFT loss under Ulysses sequence parallelism (DeepSpeed ALST through accelerate), right in every
ZeRO layout.

transformers 5.19 (`integrations.deepspeed.deepspeed_sp_compute_loss`) gives every rank the whole SP
group's token mean through a differentiable all-gather, whose backward sums over the group: each rank's
gradient is sp times its share. DeepSpeed then sums the ranks' gradients and divides by a count that
depends on the layout (DeepSpeed 0.19):

- ZeRO-1/2 (`stage_1_and_2.average_tensor` and the all-reduce path) and ZeRO-0 (the engine's
  all-reduce): world / sp, the number of data-parallel groups. The 5.19 loss ends sp times too large.
- ZeRO-3 with reduce-scatter (the default; `stage3.__avg_scatter_grads`): the whole world. The 5.19 loss
  is right there, by cancellation.
- ZeRO-3 with `reduce_scatter: false`: world / sp for a bucket that fits `reduce_bucket_size` and the
  whole world for one that does not (`__avg_scatter_contiguous_grads` against `__avg_scatter_grads`), so
  no single loss scale is right: refused (`zero3_without_reduce_scatter`).

Here, as transformers 5.25 does for the same reason, each rank back-propagates only its own tokens:
the loss is the rank's own sum of token losses over the number of trained tokens in the whole global
micro-batch (every rank's, each token counted once: the SP ranks hold disjoint slices of their group's
rows), times the divisor DeepSpeed applies. The summed and divided gradients are then exactly those of
the global batch's token mean, as one process computes it. The value returned (what the Trainer logs)
is that token mean itself; only the gradient carries the scale.

With gradient accumulation the Trainer divides each micro-batch's mean by the accumulation steps (one
process weighs the whole step's tokens equally instead): docs/training.md says so.
"""

from __future__ import annotations

import functools


def gradient_divisor(stage: int, reduce_scatter: bool, world: int, sp: int) -> int:
    """What DeepSpeed 0.19 divides the ranks' summed gradients by, for a ZeRO stage (see the module's doc)."""
    if stage == 3 and not reduce_scatter:
        raise ValueError(zero3_without_reduce_scatter(sp))
    return world if stage == 3 else world // sp


def zero3_without_reduce_scatter(sp: int) -> str:
    return (f"train.sequence_parallel {sp} with ZeRO-3 and reduce_scatter: false: DeepSpeed 0.19 then averages "
            "some gradient buckets over the data-parallel groups and others over every rank, so no loss scale "
            "gives the right gradients. Remove `reduce_scatter: false` from the DeepSpeed config (reduce-scatter "
            "is DeepSpeed's default), or launch with recipes/accelerate/zero2.yaml")


TESTED_DEEPSPEED = ("0.19", "0.20")  # [from, to): the releases whose divisors the module's doc reads


def deepspeed_version_problem() -> str | None:
    """Why this DeepSpeed cannot be trusted with the SP loss (its gradient divisors were read from 0.19), or None."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        v = version("deepspeed")
    except PackageNotFoundError:
        return "sequence parallelism runs on DeepSpeed, which is not installed: pip install 'deepspeed>=0.19,<0.20'"
    lo, hi = TESTED_DEEPSPEED
    if not Version(lo) <= Version(v) < Version(hi):
        return (f"DeepSpeed {v}: distill's sequence-parallel loss scales each rank's gradient by what DeepSpeed "
                f"{lo} divides the summed gradients by in each ZeRO stage, and {v} was not checked (a wrong divisor "
                f"trains with gradients off by the SP degree): pip install 'deepspeed>={lo},<{hi}'")
    return None


def launched_zero3_without_reduce_scatter(environ) -> bool:
    """Whether an `accelerate launch` asks for ZeRO-3 with reduce-scatter off (from the environment accelerate
    sets: the stage, and the DeepSpeed config file when the launch config names one)."""
    import json

    stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    path = environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    zero = {}
    if path:
        try:
            with open(path) as f:
                if path.endswith((".yaml", ".yml")):
                    import yaml

                    ds = yaml.safe_load(f) or {}
                else:
                    ds = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"the DeepSpeed config {path} (ACCELERATE_DEEPSPEED_CONFIG_FILE) does not read: {e}") from e
        zero = ds.get("zero_optimization") or {}
        stage = str(zero.get("stage", stage))
    return stage == "3" and str(zero.get("reduce_scatter", True)).lower() in ("false", "0")


def deepspeed_comm_ready() -> None:
    """DeepSpeed's communication layer over the process group accelerate started. accelerate initializes it
    itself on GPUs; on CPU (gloo) it starts plain torch.distributed, and DeepSpeed's SP groups, built at
    prepare time, assert theirs is up (ZeRO-3 got it from zero.Init; ZeRO-2 and ZeRO-0 did not)."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        return
    from deepspeed import comm

    if not comm.is_initialized():
        comm.init_distributed(dist_backend=tdist.get_backend())


def ulysses_loss(trainer, model, inputs: dict, return_outputs: bool):
    """The loss of one SP rank's slice: see the module's doc. Inputs as DeepSpeed's Ulysses data loader
    gives them (pre-shifted `shift_labels`, no `labels`)."""
    import torch
    import torch.distributed as dist

    pc = trainer.accelerator.parallelism_config
    if "labels" not in inputs and "shift_labels" in inputs:
        inputs["labels"] = inputs["shift_labels"]  # the model computes its loss only when given labels
    outputs = model(**inputs)
    labels = inputs["shift_labels"]
    good = (labels != -100).sum()
    log_probs = getattr(outputs, "log_probs", None)  # TRL's fused LM head: the token log-probs, 0 where ignored
    if log_probs is not None:
        local_sum = -log_probs.sum()
    else:  # the model's own token mean; a slice without trained tokens adds a zero that keeps the graph
        local_sum = torch.where(good > 0, outputs.loss * good, outputs.logits.sum() * 0)
    both = torch.stack([good.to(torch.float64), local_sum.detach().to(torch.float64)])
    dist.all_reduce(both)  # every rank of every group: each trained token once
    tokens, total = both[0].clamp(min=1), both[1]
    d = _divisor(trainer, pc.sp_size)
    scaled = local_sum * (d / tokens).to(local_sum.dtype)
    mean = (total / tokens).to(local_sum.dtype)
    loss = scaled + (mean - scaled.detach())  # the value of the global mean, the gradient of this rank's share
    return (loss, outputs) if return_outputs else loss


def _divisor(trainer, sp: int) -> int:
    import torch.distributed as dist

    engine = trainer.deepspeed
    if engine is None:
        raise RuntimeError("sequence parallelism runs on DeepSpeed, and this trainer has no DeepSpeed engine")
    return gradient_divisor(engine.zero_optimization_stage(), bool(engine.zero_reduce_scatter()),
                            dist.get_world_size(), sp)


@functools.cache
def sft_trainer_class():
    """TRL's SFTTrainer with the loss above under Ulysses SP. The class sits between TRL's trainer and
    transformers' Trainer in the MRO, so TRL's compute_loss (its metrics, its fused head) still runs and its
    call to Trainer.compute_loss lands here."""
    from transformers import Trainer
    from trl import SFTTrainer

    class UlyssesLoss(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            pc = getattr(self.accelerator, "parallelism_config", None)
            if pc is not None and pc.sp_backend == "deepspeed" and pc.sp_enabled and self.model.training:
                if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                    # TRL multiplies an SP loss by the process count when the Trainer counted the tokens; the
                    # Ulysses loader drops `labels`, so it never does: refuse rather than train 4x too fast
                    raise RuntimeError("the SP loss was given num_items_in_batch: this transformers/TRL pair "
                                       "counts tokens in a way distill's Ulysses loss was not checked against")
                return ulysses_loss(self, model, inputs, return_outputs)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    class DistillSFTTrainer(SFTTrainer, UlyssesLoss):
        pass

    return DistillSFTTrainer
