"""`distill train` with `train.method: dpo`: DPO on the filter's preference pairs (issue 33).

The pairs are `pairs.jsonl` of `distill filter` with `export.pairs.enabled` (a kept trace against a
complete one judged wrong, same problem), in TRL's conversational preference format; TRL's
`DPOTrainer` tokenizes them with the student's chat template and computes the loss against a frozen
copy of the starting student (or, with LoRA, the base under the adapter). Everything else is the SFT
stage's: the model resolution, tokenizer, LoRA, precision and launch layout (`common_args`), the output
lock, the save path (`save_student`), the summary beside the student.

Logged per step (TRL): `rewards/margins` (beta x the chosen-minus-rejected log-probability ratio to the
reference), `rewards/accuracies`, `logps/chosen`, `logps/rejected`; `train_summary.json` keeps them and
`margins.png` plots the margin.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from distill.config import Recipe, recipe_dict
from distill.console import console
from distill.train.common import (
    check_reporters,
    choose_speed,
    common_args,
    describe_layout,
    is_main,
    layout,
    load_tokenizer,
    log_progress,
    lora_config,
    save_student,
    versions,
)
from distill.train.examples import TrainDataError

PAIRS = "pairs.jsonl"


def pairs_file(data: str | Path) -> Path:
    p = Path(data).expanduser()
    if p.is_dir():
        p = p / PAIRS
    if not p.is_file():
        raise TrainDataError(f"{p}: no preference pairs; run `distill filter ... --set export.pairs.enabled=true` "
                             f"(it writes {PAIRS} beside kept.jsonl) and pass its output directory as --data")
    return p


def load_pairs(path: Path):
    """The pairs as a datasets.Dataset of prompt/chosen/rejected message lists; a malformed line names itself."""
    import datasets

    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                row = {k: r[k] for k in ("prompt", "chosen", "rejected")}
            except (ValueError, KeyError, TypeError) as e:
                raise TrainDataError(f"{path} line {i}: not a preference pair with prompt, chosen and rejected "
                                     f"({type(e).__name__}: {e}); rewrite it with `distill filter`") from None
            rows.append(row)
    if not rows:
        raise TrainDataError(f"{path}: no pairs (no problem had both a kept and a wrong complete sample); sample "
                             "more per problem (sampling.n) or use SFT")
    return datasets.Dataset.from_list(rows)


def train_dpo(recipe: Recipe, data, out, resume: bool = True) -> dict:
    """One DPO run into `out`; returns the summary written to train_summary.json."""
    from distill.lock import output_lock

    with output_lock(out, "distill train"):
        return _train_dpo(recipe, data, Path(out), resume)


def _train_dpo(recipe: Recipe, data, out: Path, resume: bool) -> dict:
    from trl import DPOConfig, DPOTrainer

    from distill.models import resolve_model
    from distill.train.common import last_checkpoint

    cfg = recipe.train
    check_reporters(cfg.report_to)
    path = pairs_file(data or cfg.data)
    ds = load_pairs(path)
    speed = choose_speed(cfg, False, training_only=True)
    model = resolve_model(cfg.model, cfg.revision)
    tok = load_tokenizer(model.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template)
    args = common_args(cfg, speed)
    args["model_init_kwargs"] = {k: v for k, v in args["model_init_kwargs"].items() if v is not None}
    dargs = DPOConfig(output_dir=str(out), num_train_epochs=cfg.epochs, max_length=cfg.max_length,
                      beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type], run_name=cfg.run_name,
                      lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler == "cosine_with_min_lr"
                      else None, **args)
    trainer = DPOTrainer(model=model.path, args=dargs, train_dataset=ds, processing_class=tok,
                         peft_config=lora_config(cfg.lora) if cfg.lora.enabled else None,
                         callbacks=log_progress(None))
    if is_main():
        console.print(f"DPO on {len(ds)} pairs from {path}; layout: "
                      f"{describe_layout(layout(trainer), cfg.per_device_batch_size, cfg.gradient_accumulation_steps, 'pairs')}")
    ckpt = last_checkpoint(out) if resume else None
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=ckpt)
    secs = time.perf_counter() - t0
    save_student(trainer, tok, None, out, merge=cfg.lora.enabled and cfg.lora.merge)
    log = trainer.state.log_history
    steps = [x for x in log if "rewards/margins" in x]
    summary = {"out": str(out), "method": "dpo", "pairs": len(ds), "steps": trainer.state.global_step,
               "epochs": float(trainer.state.epoch or 0), "seconds": round(secs, 2), "resumed_from": ckpt,
               "first_margin": steps[0]["rewards/margins"] if steps else None,
               "final_margin": steps[-1]["rewards/margins"] if steps else None,
               "first_loss": steps[0].get("loss") if steps else None,
               "final_loss": steps[-1].get("loss") if steps else None, "layout": layout(trainer)}
    if trainer.is_world_process_zero():
        (out / "train_summary.json").write_text(json.dumps(
            {"summary": summary, "log": log, "recipe": recipe_dict(recipe), "data": str(path), "model": model.path,
             "versions": versions()}, indent=1, default=str))
        plot_margins(log, out / "margins.png")
    return summary


def plot_margins(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(x["step"], x["rewards/margins"]) for x in log if "rewards/margins" in x and "step" in x]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*pts, strict=True), marker="o", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward margin (chosen - rejected)")
    ax.set_title("distill train (DPO)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
