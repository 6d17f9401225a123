"""Compute accounting for comparing distillation with RL on equal terms.

One unit for every arm: floating-point operations estimated as parameters x tokens, 2 per
parameter per token for a forward pass and 4 more for the backward pass (the usual 6N rule for
training, 2N for inference; Kaplan et al. 2020). Generation with a KV cache runs each prompt and
completion token through the model once, so it costs 2N per token.

- Distillation: the teacher's generation of every sample, kept or rejected (2 N_teacher per
  prompt + completion token), plus SFT (6 N_student per token, per epoch).
- GRPO: per step, generating the group's completions (2N per prompt + completion token), the
  policy's forward and backward on them (6N), and the frozen reference's forward when beta > 0 (2N);
  with num_iterations > 1, one more forward for the old policy's log-probabilities (2N).
- On-policy distillation: per step, the student's generation (2 N_student per prompt + completion
  token), the teacher's forward pass over the same tokens (2 N_teacher), the student's forward and
  backward (6 N_student). The teacher's share is teacher-side compute; the rest is student-side.
Evaluation is measurement and is not counted in either arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def count_parameters(model_path: str) -> int:
    """Parameters of a causal LM from its config alone (meta device: no weights are loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in m.parameters())


def generation_flops(samples: list[dict], params: int) -> float:
    """2N per prompt and completion token of every sample generated (kept or not)."""
    tokens = sum((s.get("prompt_tokens") or 0) + (s.get("completion_tokens") or 0) for s in samples)
    return 2.0 * params * tokens


def sft_flops(tokens_per_epoch: int, epochs: float, params: int) -> float:
    """6N per training token (forward and backward), every epoch; padding-free packing trains no padding."""
    return 6.0 * params * tokens_per_epoch * epochs


def grpo_flops_per_token(beta: float, num_iterations: int = 1) -> float:
    """Operations per parameter per generated token (prompt or completion) of one GRPO generation batch.

    The batch is generated once (2) and trained on num_iterations times (6 each, plus 2 for the
    reference's forward when beta > 0); reusing it needs the old policy's log-probabilities (2)."""
    per = 2.0 + num_iterations * (6.0 + (2.0 if beta > 0 else 0.0))
    if num_iterations > 1:
        per += 2.0
    return per


@dataclass
class Ledger:
    """Running total of one arm's compute, by item."""

    items: dict[str, float] = field(default_factory=dict)

    def add(self, what: str, flops: float) -> float:
        self.items[what] = self.items.get(what, 0.0) + flops
        return self.total

    @property
    def total(self) -> float:
        return sum(self.items.values())


def onpolicy_flops_per_token(student_params: int, teacher_params: int) -> dict[str, float]:
    """Operations per prompt + completion token of one on-policy distillation step, by item (each generation batch
    is trained on once, so TRL's num_tokens counts every token once)."""
    return {"student generation": 2.0 * student_params, "teacher forward": 2.0 * teacher_params,
            "student forward/backward": 6.0 * student_params}


def onpolicy_flops(student_params: int, teacher_params: int, tokens: int, teacher_share: float = 0.0) -> dict[str, float]:
    """The ledger of an on-policy distillation run over `tokens` prompt + completion tokens, of which the share
    `teacher_share` was sampled by the teacher (onpolicy.lmbda < 1: generation by the teacher, 2 x its parameters
    a token) and the rest by the student. The teacher's forward and the student's forward/backward cover all."""
    per = onpolicy_flops_per_token(student_params, teacher_params)
    out = {"student generation": per["student generation"] * tokens * (1 - teacher_share)}
    if teacher_share > 0:
        out["teacher generation"] = 2.0 * teacher_params * tokens * teacher_share
    out["teacher forward"] = per["teacher forward"] * tokens
    out["student forward/backward"] = per["student forward/backward"] * tokens
    return out


def served_teacher_flops(teachers: list[dict]) -> dict[str, float]:
    """The served teachers' part of the ledger, from the manifest (distill/train/served.py): each teacher's forward
    over the sequences it scored (prompt + completion, 2 x its parameters a token) and its generation of the
    teacher-sampled completions, by name (the work was done on its server, not in the training processes)."""
    out = {}
    for t in teachers:
        out[f"teacher forward (served: {t['name']})"] = 2.0 * t["params"] * t["forward_tokens"]
        if t.get("sampled_tokens"):
            out[f"teacher generation (served: {t['name']})"] = 2.0 * t["params"] * t["sampled_tokens"]
    return out


def grpo_budget_callback(budget: float, params: int, beta: float, num_iterations: int = 1,
                         checkpoints: tuple[float, ...] = (), on_point=None):
    """A TrainerCallback that stops GRPO once its compute reaches `budget` FLOPs, and saves a checkpoint
    when it passes each fraction in `checkpoints` (e.g. (1/3, 2/3)), so accuracy can be plotted against
    compute. Compute is counted from TRL's `num_tokens` log (prompt + completion tokens seen)."""
    return budget_callback(budget, grpo_flops_per_token(beta, num_iterations) * params, checkpoints, on_point)


def budget_callback(budget: float, flops_per_token: float, checkpoints: tuple[float, ...] = (), on_point=None):
    """A TrainerCallback that stops training once `flops_per_token` x TRL's `num_tokens` (prompt + completion
    tokens generated so far; GRPO and the DistillationTrainer both log it) reaches `budget`, saving a checkpoint
    at each fraction in `checkpoints` and at the end."""
    from transformers import TrainerCallback

    per = flops_per_token

    class ComputeBudget(TrainerCallback):
        def __init__(self):
            self.flops = 0.0
            self.tokens = 0
            self.points: list[tuple[int, float]] = []  # (step, flops) where a checkpoint was asked for
            self._marks = sorted(checkpoints)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                # num_tokens counts each generated token once per step, before any reuse of the batch
                self.tokens = int(logs["num_tokens"])
                self.flops = float(logs["num_tokens"]) * per
                if self._marks and self.flops >= self._marks[0] * budget:
                    while self._marks and self.flops >= self._marks[0] * budget:
                        self._marks.pop(0)
                    control.should_save = True
                    self.points.append((state.global_step, self.flops))
                    if on_point:
                        on_point(state.global_step, self.flops)
                if self.flops >= budget:
                    control.should_training_stop = True
                    control.should_save = True
                    if not self.points or self.points[-1][0] != state.global_step:
                        self.points.append((state.global_step, self.flops))
            return control

    return ComputeBudget()
