"""Every place distill reaches into TRL's internals, in one module, checked at start.

TRL's public API (the trainers and their configs) is used everywhere; what is not public is here: the
on-policy trainer's overrides of `DistillationTrainer`'s private methods and the instance attributes they
read and set, TRL's chunked divergence kernel, and `trl.trainer.utils.create_model_from_path` (GRPO and
on-policy load their policy through it). `check(arm)` runs before any weights load: a TRL whose methods or
signatures differ from the ones these overrides were written against is refused, naming what is missing,
the version found and the versions tested. Before this module, a renamed method meant `lmbda < 1` trained
purely on-policy while logging teacher steps.

`tests/test_trl_seam.py` counts the calls TRL makes into each override in a real run (a test per override
fails if TRL stops calling it) and renames one to check the refusal.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import random

TESTED = "1.16"  # the TRL minor these overrides were written and tested against (pyproject: trl>=1.16,<1.17)


class TrlSeamError(RuntimeError):
    """The installed TRL is not the one distill's overrides of its internals were written against."""


# (module, object, attribute or None, the parameters it must take in order, or None: only that it exists)
NEEDS = {
    "onpolicy": [
        ("trl", "DistillationTrainer", "_generate_and_score_completions", ("self", "inputs")),
        # forwarded with *args, **kwargs; a served teacher's samples read the prompts' token ids from the first
        ("trl", "DistillationTrainer", "_generate_single_turn", ("self", "prompt_ids")),
        ("trl", "DistillationTrainer", "_get_last_hidden_state", ("self", "unwrapped_model")),
        ("trl", "DistillationTrainer", "_compute_loss", ("self", "unwrapped_student", "inputs", "num_items_in_batch")),
        ("trl.kernels.chunked_divergence", "ChunkedDivergenceFunction", "apply", None),
        ("trl.trainer.utils", "create_model_from_path", None, ("model_id",)),
    ],
    "grpo": [("trl.trainer.utils", "create_model_from_path", None, ("model_id",))],
}
# what the on-policy overrides read or set on a built DistillationTrainer
INSTANCE = ("_metrics", "model_wrapped", "use_vllm", "teacher_model", "beta", "temperature", "accelerator",
            "processing_class", "eos_token_ids")
# the overrides, by name: tests/test_trl_seam.py checks that TRL calls each one
OVERRIDES = ("_generate_and_score_completions", "_generate_single_turn", "_get_last_hidden_state", "_compute_loss")


def _version() -> str:
    try:
        import trl

        return trl.__version__
    except Exception:  # noqa: BLE001 - no TRL at all is reported by the check itself
        return "not installed"


def problems(arm: str) -> list[str]:
    """What the installed TRL lacks of what `arm` relies on (empty: all there, as tested)."""
    out = []
    for mod, obj, attr, params in NEEDS[arm]:
        where = f"{mod}.{obj}" + (f".{attr}" if attr else "")
        try:
            thing = getattr(importlib.import_module(mod), obj)
            if attr:
                thing = getattr(thing, attr)
        except (ImportError, AttributeError) as e:
            out.append(f"{where} is missing ({type(e).__name__}: {e})")
            continue
        if params is None:
            continue
        try:
            got = tuple(inspect.signature(thing).parameters)
        except (TypeError, ValueError):
            continue
        if got[: len(params)] != params:
            out.append(f"{where} takes ({', '.join(got)}), distill's override expects ({', '.join(params)}, ...)")
    return out


def check(arm: str) -> None:
    """Refuse to start `arm` on a TRL whose internals differ from those its overrides were written against."""
    found = problems(arm)
    if found:
        raise TrlSeamError(
            f"distill {arm} relies on TRL internals that the installed TRL {_version()} does not have as expected: "
            + "; ".join(found) + f". distill is tested with TRL {TESTED}.x: install it (pip install 'trl>={TESTED},"
            f"<{TESTED.split('.')[0]}.{int(TESTED.split('.')[1]) + 1}'), or update distill/train/trl_seam.py")


def check_instance(trainer) -> None:
    missing = [a for a in INSTANCE if not hasattr(trainer, a)]
    if missing:
        raise TrlSeamError(f"the DistillationTrainer of TRL {_version()} has no {missing} after construction, which "
                           f"distill's on-policy overrides read; distill is tested with TRL {TESTED}.x")


def create_model_from_path(*args, **kwargs):
    """TRL's policy loader (`trl.trainer.utils.create_model_from_path`, not exported by TRL)."""
    from trl.trainer.utils import create_model_from_path as load

    return load(*args, **kwargs)


@functools.cache
def onpolicy_trainer_class():
    """TRL's DistillationTrainer plus two logs it does not keep (the reverse KL to the teacher at every beta, the
    verifier's scores of the student's own completions) and the teacher sampling a share of the steps (`lmbda`).
    One class per process (cached), so a test can count the calls TRL makes into each override."""
    check("onpolicy")
    import torch
    from trl import DistillationTrainer
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    class OnPolicyTrainer(DistillationTrainer):
        _hidden: list | None = None
        sampler: str = "student"  # who sampled the generation batch being trained on

        def __init__(self, *args, distill_cfg=None, verifier=(), served=None, **kwargs):
            """`distill_cfg`: the recipe's onpolicy section, which the trainer reads for what TRL's config has not
            (`lmbda`, `teacher_samples_beta`); `verifier`: (name, scorer) pairs logged on the student's samples;
            `served`: the teacher servers (distill/train/served.py), None for the in-process teacher."""
            super().__init__(*args, **kwargs)
            check_instance(self)
            self.served = served
            self._rows = None  # the generation batch's problem rows (a served teacher is chosen per row)
            self.lmbda = distill_cfg.lmbda if distill_cfg else 1.0  # the share of steps the student samples (GKD)
            self.teacher_samples_beta = distill_cfg.teacher_samples_beta if distill_cfg else 0.0  # on the teacher's
            self.verifier_names = [n for n, _ in verifier]
            self.verifier = [f for _, f in verifier]
            self.sampled_tokens = {"student": 0, "teacher": 0}  # prompt + completion tokens by sampler, all processes

        def teacher_samples_now(self) -> bool:
            """Who samples this optimizer step: a draw seeded by (seed, step), so every process agrees (a ZeRO-3
            teacher must be gathered by all of them) and a resumed run repeats the same schedule."""
            if self.lmbda >= 1.0:
                return False
            return random.Random(f"{self.args.seed}:{self.state.global_step}").random() >= self.lmbda

        def _generate_and_score_completions(self, inputs):
            mode = "train" if self.model.training else "eval"
            self.sampler = "teacher" if mode == "train" and self.teacher_samples_now() else "student"
            # the loss of this generation batch's micro-steps (TRL reads self.beta in its loss)
            self.beta = self.teacher_samples_beta if self.sampler == "teacher" else self.args.beta
            seen = {k: len(v) for k, v in self._metrics[mode].items()}
            self._rows = inputs
            out = super()._generate_and_score_completions(inputs)
            if self.served is not None:
                self._attach_teacher(inputs, out)
            n = out["prompt_mask"].sum() + out["completion_mask"].sum()
            self.sampled_tokens[self.sampler] += int(self.accelerator.gather(n.reshape(1)).sum().item())
            if self.sampler == "teacher":
                # TRL's completion statistics of this batch describe the teacher's samples: logged apart, so
                # completions/* and verifier/* stay the student's own
                for k in [k for k in self._metrics[mode] if k.startswith("completions/")]:
                    new = self._metrics[mode][k][seen.get(k, 0):]
                    del self._metrics[mode][k][seen.get(k, 0):]
                    if not self._metrics[mode][k]:
                        del self._metrics[mode][k]  # else TRL logs it as None
                    self._metrics[mode][f"teacher_samples/{k}"].extend(new)
            if mode == "train":
                self._metrics[mode]["teacher_sampled"].append(float(self.sampler == "teacher"))
            if self.verifier:
                self._score(inputs, out, "verifier/" if self.sampler == "student" else "teacher_samples/verifier/")
            return out

        def _attach_teacher(self, rows, out):
            """The served teachers' log-probabilities of this generation batch's tokens, as tensors beside the batch
            (TRL shuffles and splits every tensor of it into the micro-batches together)."""
            names = [self.served.teacher_of(r) for r in rows]
            seqs, plens = [], []
            for p, pm, c, cm in zip(out["prompt_ids"], out["prompt_mask"], out["completion_ids"],
                                    out["completion_mask"], strict=True):
                prompt = p[pm.bool()].tolist()
                seqs.append(prompt + c[cm.bool()].tolist())
                plens.append(len(prompt))
            for n in names:
                self.served.teachers[n].stats["rows"] += 1
            scored = self.served.score(names, seqs, plens)
            vocab = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
            ids, lp = self.served.to_tensors(scored, out["completion_ids"].size(1), vocab)
            out["teacher_logprobs"] = lp.to(out["completion_ids"].device)
            if ids is not None:
                out["teacher_ids"] = ids.to(out["completion_ids"].device)

        def _teacher_sampling(self) -> dict:
            """The student's sampling settings, for a served teacher's samples (vLLM's request fields)."""
            a = self.args
            return {"max_tokens": a.max_completion_length, "temperature": a.temperature, "top_p": a.top_p,
                    "top_k": a.top_k if a.top_k and a.top_k > 0 else -1, "stop_token_ids": list(self.eos_token_ids),
                    "seed": a.seed * 100003 + self.state.global_step}

        def _generate_single_turn(self, *args, **kwargs):
            if self.sampler != "teacher":
                return super()._generate_single_turn(*args, **kwargs)
            if self.served is not None:  # the teacher's server samples, per row its own teacher
                prompt_ids = args[0] if args else kwargs["prompt_ids"]
                names = [self.served.teacher_of(r) for r in self._rows]
                return self.served.sample(names, [list(p) for p in prompt_ids], self._teacher_sampling())
            # TRL's own HF generation path, pointed at the teacher: the same padding, stop tokens, sampling
            # settings and ZeRO-3 gathering as the student's
            saved = self.model_wrapped, self.use_vllm
            self.model_wrapped, self.use_vllm = self.teacher_model, False
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                self.model_wrapped, self.use_vllm = saved

        def _score(self, inputs, out, prefix="verifier/"):
            """The verifier on this generation batch (logged under <prefix><name>, mean over every process)."""
            ids, mask = out["completion_ids"], out["completion_mask"]
            texts = self.processing_class.batch_decode([row[m.bool()] for row, m in zip(ids, mask, strict=True)],
                                                       skip_special_tokens=True)
            columns = {k: [x.get(k) for x in inputs] for k in ("answer", "problem", "prefill", "prompt_template", "meta")}
            prompts = [x["prompt"] for x in inputs]
            mode = "train" if self.model.training else "eval"
            for name, fn in zip(self.verifier_names, self.verifier, strict=True):
                vals = fn(prompts, texts, **columns)
                t = torch.tensor([math.nan if v is None else float(v) for v in vals], device=self.accelerator.device)
                t = self.accelerator.gather(t)
                t = t[~torch.isnan(t)]
                if t.numel():
                    self._metrics[mode][f"{prefix}{name}"].append(t.mean().item())

        def _get_last_hidden_state(self, unwrapped_model, *a, **kw):
            h = super()._get_last_hidden_state(unwrapped_model, *a, **kw)
            if self._hidden is not None:
                self._hidden.append((unwrapped_model, h))
            return h

        def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
            if self.served is not None:
                return self._served_loss(unwrapped_student, inputs, num_items_in_batch)
            self._hidden = [] if self.beta != 1.0 else None
            try:
                loss, entropy_sum, n_valid = super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
                with torch.no_grad():
                    if self.beta == 1.0:  # the loss is the reverse KL: sum over tokens / num_items_in_batch
                        kl_sum = loss.detach() * (num_items_in_batch if num_items_in_batch is not None else n_valid)
                    else:
                        kl_sum = self._reverse_kl_sum(inputs)
                self._log_reverse_kl(kl_sum, n_valid)
            finally:
                self._hidden = None
            return loss, entropy_sum, n_valid

        def _log_reverse_kl(self, kl_sum, n_valid):
            mode = "train" if self.model.training else "eval"
            n = self.accelerator.gather(n_valid.detach().float().reshape(1)).sum()
            s = self.accelerator.gather(torch.as_tensor(kl_sum, device=n.device).float().reshape(1)).sum()
            if n > 0:  # reverse_kl: on the student's own samples; on the teacher's, logged apart
                key = "reverse_kl" if self.sampler == "student" else "teacher_samples/reverse_kl"
                self._metrics[mode][key].append((s / n).item())

        def _served_loss(self, unwrapped_student, inputs, num_items_in_batch):
            """TRL's `_compute_loss` contract (loss, entropy sum, valid positions; the loss reduced as TRL's: sum /
            num_items_in_batch, else the mean over this micro-batch) with the teacher's distribution from its
            server: the student's hidden states through TRL's own `_get_last_hidden_state`, its logits chunk by
            chunk through its head module (ZeRO-3 gathers the head on the call), the divergence on the served
            support (distill/train/served.py). The reverse KL is logged on the same support."""
            from distill.train.served import served_loss_sums

            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
            h = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, inputs["completion_ids"].size(1))
            head = unwrapped_student.get_output_embeddings()
            total, rkl, ent, n_valid = served_loss_sums(
                h, head, inputs.get("teacher_ids"), inputs["teacher_logprobs"], mask.to(h.device), self.beta,
                self.temperature, self.served.tail)
            if num_items_in_batch is None:
                loss = total / n_valid.clamp(min=1)
            else:
                loss = total / (num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch)
                                else num_items_in_batch)
            self._log_reverse_kl(rkl, n_valid)
            return loss, ent, n_valid

        def _reverse_kl_sum(self, inputs):
            """KL(student || teacher) summed over this micro-batch's completion tokens, from the hidden states the
            loss just computed (one more pass over both LM heads, no backbone). Scales and softcaps: none (Qwen,
            Llama, SmolLM)."""
            (s_model, s_h), (t_model, t_h) = self._hidden[0], self._hidden[-1]
            s_head, t_head = s_model.get_output_embeddings(), t_model.get_output_embeddings()
            valid = inputs["completion_mask"].reshape(-1) != 0
            s = s_h.detach().reshape(-1, s_h.size(-1))[valid]
            t = t_h.detach().reshape(-1, t_h.size(-1))[valid].to(s.device)

            def whole(w, dtype):
                # FSDP2 shards the heads as DTensors: gathered once, in the hidden states' dtype, as TRL's own loss
                # path does; ZeRO-3's partitioned heads are gathered inside the kernel
                if isinstance(w, torch.distributed.tensor.DTensor):
                    return w.full_tensor().to(dtype)
                return w

            div, _ = ChunkedDivergenceFunction.apply(
                s, whole(s_head.weight, s.dtype), whole(s_head.bias, s.dtype), t, whole(t_head.weight, t.dtype),
                whole(t_head.bias, t.dtype), 1.0, self.temperature)
            return div.sum()

    return OnPolicyTrainer
