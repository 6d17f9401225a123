"""The GRPO arm: TRL's GRPOTrainer on the recipe's problems, rewarded by the filter's verifier.

    distill grpo --recipe recipes/grpo/quickstart.yaml --out runs/quick/grpo
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m distill grpo --recipe recipes/grpo/qwen2.5-math-7b.yaml

The problems and the prompt are the recipe's `problems` and `prompt` sections, exactly as
`distill generate` and `distill eval` build them, so a GRPO policy is prompted the way it will be
evaluated. Rewards are named in `grpo.rewards` (distill/train/rewards.py). The loss defaults to the
report's GRPO objective (`loss_type: grpo`, KL to a frozen reference with β = 0.001 by the k3
estimator), not TRL's defaults (`dapo`, β = 0): see GrpoConfig in distill/config.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import Recipe, RecipeError, recipe_dict
from distill.lock import locks_output


@dataclass
class GrpoSummary:
    out: str
    problems: int
    steps: int = 0
    seconds: float = 0.0
    completions: int = 0
    completion_tokens: int = 0  # generated during training (from the logged mean lengths)
    tokens_seen: int = 0  # TRL's num_tokens: prompt + completion tokens through the policy
    first_reward: float | None = None
    last_reward: float | None = None
    rewards: dict = field(default_factory=dict)  # name -> (first, last) mean
    resumed_from: str | None = None
    log: list[dict] = field(default_factory=list)

    def table(self):
        from rich.table import Table

        t = Table("metric", "value", title="distill grpo")
        rows = [("problems", f"{self.problems}"), ("optimizer steps", f"{self.steps}"),
                ("completions generated", f"{self.completions}"), ("completion tokens", f"{self.completion_tokens}"),
                ("wall time", f"{self.seconds:.1f} s"),
                ("mean reward, first → last quarter of steps", f"{_f(self.first_reward)} → {_f(self.last_reward)}")]
        rows += [(f"  {k}", f"{_f(a)} → {_f(b)}") for k, (a, b) in self.rewards.items()]
        if self.resumed_from:
            rows.append(("resumed from", self.resumed_from))
        for k, v in rows:
            t.add_row(k, v)
        return t


def _world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _f(x):
    return "-" if x is None else f"{x:.3f}"


def build_dataset(recipe: Recipe, tokenizer, stage: str = "grpo"):
    """One row per problem: the prompt as distill sends it, plus the columns the rewards read (grpo, onpolicy)."""
    from datasets import Dataset

    from distill.data import load_problems
    from distill.prompts import build_prompt, render

    if recipe.problems is None:
        raise RecipeError(f"distill {stage} needs a problems section (problems.task or problems.source)")
    problems = load_problems(recipe.problems)
    rows = []
    bos = tokenizer.bos_token
    adds_bos = bool(bos) and tokenizer("x").get("input_ids", [None])[0] == tokenizer.bos_token_id
    for p in problems:
        pr = build_prompt(p.problem, recipe.prompt, p.meta)
        if pr.prefill or pr.raw:
            # A prefill (the r1 template's "<think>\n") cannot be expressed as chat messages to TRL: give the
            # rendered text, which TRL tokenizes as is (without a second BOS).
            prompt = render(tokenizer, pr)
            if adds_bos and prompt.startswith(bos):
                prompt = prompt[len(bos):]
        else:
            prompt = pr.messages  # TRL applies the chat template with the generation prompt
        rows.append({"prompt": prompt, "answer": p.answer, "problem": p.problem, "problem_id": p.id,
                     "prefill": pr.prefill, "prompt_template": recipe.prompt.template,
                     "meta": json.dumps(p.meta, ensure_ascii=False, default=str)})
    return Dataset.from_list(rows), len(problems)


def grpo_config(recipe: Recipe, out: Path):
    from trl import GRPOConfig

    from distill.train.common import choose_speed, common_args, vllm_args

    cfg = recipe.grpo
    # The policy generates as well as trains: sdpa, or flash_attention_2 when installed (never varlen).
    speed = choose_speed(cfg, packing=False, training_only=False)
    vllm = vllm_args(cfg)
    return GRPOConfig(
        output_dir=str(out),
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        loss_type=cfg.loss_type,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions,
        reward_weights=[float(w) for w in cfg.rewards.values()],
        log_completions=cfg.log_completions,
        **common_args(cfg, speed),
        **vllm,
    )


def check_batch(cfg, world: int) -> None:
    """TRL's rule, with the world size in it: every generation batch (per-device batch x processes x
    accumulation steps) holds whole groups of `num_generations` completions."""
    gen = cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps
    if gen % cfg.num_generations:
        fits = [n for n in range(2, gen + 1) if gen % n == 0]
        raise RecipeError(
            f"grpo: per_device_batch_size {cfg.per_device_batch_size} x {world} process(es) x "
            f"gradient_accumulation_steps {cfg.gradient_accumulation_steps} = {gen} completions a generation batch, "
            f"not a multiple of num_generations {cfg.num_generations}: each batch must hold whole groups. "
            f"With this layout num_generations can be one of {fits[:12]}, or change the batch or accumulation.")


def server_tensor_parallel(model: str, gpus: int, revision: str | None = None) -> int:
    """The tensor-parallel size for a vLLM server on a node of `gpus` GPUs: the largest that divides both
    the GPU count and the attention heads (vLLM shards heads; KV heads are replicated when fewer).
    recipes/grpo/slurm-vllm-server.sbatch uses it when VLLM_TP is not set."""
    from transformers import AutoConfig

    from distill.models import EMBEDDED_ALIASES, resolve_model

    path = resolve_model(model).path if model in EMBEDDED_ALIASES else model  # a hub id: its config alone
    cfg = AutoConfig.from_pretrained(path, revision=revision)
    heads = getattr(cfg.get_text_config(), "num_attention_heads", None) or 1
    return max(t for t in range(1, max(1, gpus) + 1) if gpus % t == 0 and heads % t == 0)


def stop_ids(tokenizer, model_eos) -> list[int]:
    """Every token that ends a rollout: the template's end of turn first (a base checkpoint's own EOS,
    e.g. Qwen2.5-Math's <|endoftext|>, is not the <|im_end|> the chat template closes a turn with), then
    the tokenizer's and the model's EOS."""
    from distill.train.examples import end_of_turn

    eot, _ = end_of_turn(tokenizer)
    model_eos = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
    ids = [eot, tokenizer.eos_token_id, *model_eos]
    return [i for i in dict.fromkeys(ids) if i is not None]


def build_trainer(recipe: Recipe, model, ds, tokenizer, out: Path, callbacks=None):
    """model: a path, or a model instance already built.

    A path is loaded here, with TRL's own loader and the same arguments TRL would use, so that the
    end-of-turn token joins the model's EOS before TRL reads it: TRL stops HF rollouts at the model's
    generation_config EOS and masks what follows it, and gives vLLM the same as stop tokens."""
    from trl import GRPOTrainer

    from distill.train.trl_seam import check, create_model_from_path

    check("grpo")

    from distill.train.common import checkpoint_callback, choose_speed, log_progress, lora_config
    from distill.train.rewards import build_rewards

    cfg = recipe.grpo
    funcs, _ = build_rewards(cfg)
    args = grpo_config(recipe, out)
    speed = choose_speed(cfg, packing=False, training_only=False)
    init_kwargs = None
    if isinstance(model, str):
        init_kwargs = dict(args.model_init_kwargs or {})
        kw = dict(init_kwargs)
        if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
            kw["device_map"] = None  # as TRL does: "auto" fails under distributed training
        kw.setdefault("trust_remote_code", args.trust_remote_code)
        model = create_model_from_path(model, **kw)
    else:  # a model built in memory (benchmarks)
        model.set_attn_implementation(speed.attn_implementation)
    args.model_init_kwargs = None
    stops = stop_ids(tokenizer, model.generation_config.eos_token_id)
    model.generation_config.eos_token_id = stops
    if cfg.use_vllm:  # vLLM reads the checkpoint's own generation_config.json, not this object
        args.generation_kwargs = {**(args.generation_kwargs or {}), "stop_token_ids": stops}
    peft_config = lora_config(cfg.lora) if cfg.lora.enabled else None
    if 0 < speed.checkpointing < 1:
        callbacks = [*(callbacks or []), checkpoint_callback(speed.checkpointing)]
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=log_progress(callbacks))
    trainer.distill_init_kwargs = init_kwargs  # how to load the base again for an offline LoRA merge
    return trainer


@locks_output("distill grpo", "grpo")  # one run per output directory (rank 0 holds it)
def train_grpo(recipe: Recipe, out: str | Path | None = None, resume: bool = True, callbacks=None) -> GrpoSummary:
    """Run GRPO from the recipe; save the policy like a distill student (weights, template, EOS) plus grpo_summary.json."""
    from distill.models import resolve_model
    from distill.train.common import check_reporters, layout, load_tokenizer, run_arm, write_summary
    from distill.train.examples import end_of_turn
    from distill.train.rewards import build_rewards

    cfg = recipe.grpo
    out = out or cfg.output_dir
    if not out:
        raise RecipeError("no output directory: pass --out DIR or set grpo.output_dir")
    out = Path(out)
    build_rewards(cfg)  # unknown reward names fail before the model loads
    check_batch(cfg, _world())
    check_reporters(cfg.report_to)
    model = resolve_model(cfg.model, cfg.revision)
    tok = load_tokenizer(model.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template)
    ds, n = build_dataset(recipe, tok)
    trainer = build_trainer(recipe, model.path, ds, tok, out, callbacks)
    eot, _ = end_of_turn(tok)
    run = run_arm(trainer, tok, out, cfg, "completions", eot, resume, closers=trainer.reward_funcs)
    ckpt = run.resumed_from
    s = GrpoSummary(str(out), n, steps=trainer.state.global_step, seconds=run.seconds, resumed_from=ckpt)
    s.log = trainer.state.log_history
    steps = [x for x in s.log if "reward" in x]
    if steps:
        # One step's mean is noisy (a few groups); compare the first and last quarter of the steps.
        q = max(1, len(steps) // 4)

        def mean(key, part):
            vals = [x[key] for x in part if key in x]
            return sum(vals) / len(vals) if vals else None

        s.first_reward, s.last_reward = mean("reward", steps[:q]), mean("reward", steps[-q:])
        for name in cfg.rewards:
            key = f"rewards/{name}/mean"
            if key in steps[0]:
                s.rewards[name] = (mean(key, steps[:q]), mean(key, steps[-q:]))
        # completions per optimizer step: the generation batch is reused num_iterations times
        per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps * _world() / cfg.num_iterations
        s.completion_tokens = int(sum(x.get("completions/mean_length", 0.0) for x in steps)
                                  * per_step * trainer.args.logging_steps)
        s.tokens_seen = int(steps[-1].get("num_tokens", 0))
    s.completions = int(s.steps * cfg.per_device_batch_size * cfg.gradient_accumulation_steps * _world()
                        / cfg.num_iterations)
    write_summary(out, "grpo_summary.json",
                  {"summary": {k: v for k, v in s.__dict__.items() if k != "log"}, "log": s.log, "layout": layout(trainer),
                   "recipe": recipe_dict(recipe), "model": model.path},
                  plot=lambda: plot_rewards(s.log, list(cfg.rewards), out / "rewards.png"))
    return s


def plot_rewards(log: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [x for x in log if "reward" in x and "step" in x]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [x["step"] for x in pts]
    ax.plot(steps, [x["reward"] for x in pts], marker="o", ms=3, label="total (weighted)")
    for n in names:
        key = f"rewards/{n}/mean"
        if key in pts[0]:
            ax.plot(steps, [x.get(key) for x in pts], ls="--", label=n)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward of the step's completions")
    ax.set_title("distill grpo")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
