"""Served teachers for `distill onpolicy`: the teacher on vLLM servers, not in the training processes.

    onpolicy:
      teacher_servers:
        - {name: math, url: http://math-node:8000, checkpoint: deepseek-ai/DeepSeek-R1-Distill-Qwen-32B}
        - {name: code, url: http://code-node:8000, checkpoint: ...}
      teacher_route: domain        # each problem's `domain` names its teacher
      teacher_top_k: 8             # the teacher's top 8 tokens + the sampled one + a tail bucket

A teacher is stock `vllm serve` (recipes/onpolicy/slurm-teacher-servers.sbatch). Scoring a completion is one
teacher-forced request: the prompt and the student's completion as token ids, `max_tokens: 1`,
`prompt_logprobs: k`; vLLM answers with the teacher's top-k tokens at every position plus the token that is there
(the student's sample). Those (at most k + 1) tokens and one tail bucket holding the rest of the probability mass
are the support the divergence is computed on, for every beta (forward, reverse, generalized JSD as TRL defines
it). With `teacher_top_k: -1` the support is the whole vocabulary and the loss equals TRL's in-process loss
(tests/test_vllm.py measures it). A top-k support without the tail is silently wrong: at k = 1 both
distributions renormalize to one token and the loss is zero (verl #7855), so the tail is on by default.

Why not TRL's own server trainers (TRL 1.16): `ServerDistillationTrainer` needs TRL's `trl vllm-serve`
(`get_sequence_logprobs`), allows only a top-1 support for beta > 0 and one teacher; `AsyncDistillationTrainer`
scores on stock `vllm serve` with several teachers, but needs the student on a vLLM server with NCCL weight
transfer (no CPU path, no in-process student) and narrows beta > 0 to two tokens. The support here is the same
construction (teacher-forced `prompt_logprobs`, tail bucket); the student side, the on-policy overrides (lmbda,
the logs) and the launch stay those of the in-process arm.

What stays in-process: the student (and its generation). With `lmbda < 1` the teacher's samples come from its
server too (the same sampling settings as the student's, stop tokens included).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distill.teachers.base import TeacherError
from distill.train.examples import PreflightError


class TeacherServerError(TeacherError):
    """A served teacher did not answer usably (after retries): the run stops with this message (exit 2)."""


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


@dataclass
class ServedTeacher:
    name: str
    url: str
    model: str = ""  # the served model name (default: the only one, or the one called `name`)
    root: str = ""  # the checkpoint path the server reports
    max_model_len: int = 0
    checkpoint: str = ""  # where the preflight read its config and tokenizer
    params: int = 0
    stats: dict = field(default_factory=lambda: {"rows": 0, "score_requests": 0, "scored_tokens": 0, "forward_tokens": 0,
                                                 "sample_requests": 0, "sampled_tokens": 0,
                                                 "request_seconds": 0.0})  # summed over concurrent requests


def _session(pool: int, retries: int = 6):
    """requests with urllib3's Retry: 408/429/5xx and dropped connections are retried with backoff, honouring
    Retry-After (POST included: scoring and sampling are idempotent)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=2, status=retries, backoff_factor=0.5, backoff_max=30,
                  status_forcelist=(408, 409, 429, 500, 502, 503, 504), allowed_methods=None,
                  respect_retry_after_header=True, raise_on_status=False)
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool, pool_maxsize=pool)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


class TeacherServers:
    """The recipe's teacher servers: routing, scoring, sampling and the manifest of what each one did."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.k = cfg.teacher_top_k
        self.tail = cfg.teacher_tail and cfg.teacher_top_k != -1
        self.route = cfg.teacher_route
        self.teachers = {s.name: ServedTeacher(s.name, _base(s.url), s.model or "") for s in cfg.teacher_servers}
        self._http = _session(cfg.teacher_concurrency)
        self._pool = ThreadPoolExecutor(cfg.teacher_concurrency, thread_name_prefix="teacher")
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------
    # routing

    def teacher_of(self, row: dict) -> str:
        """The name of the teacher of one problem row (its `teacher_route` column, or that key of its meta)."""
        if not self.route:
            return next(iter(self.teachers))
        v = row.get(self.route)
        if v is None and row.get("meta"):
            import json

            meta = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"])
            v = meta.get(self.route)
        return "" if v is None else str(v)

    def check_routes(self, rows) -> dict[str, int]:
        """Problems per teacher; refuses a problem whose route value names no teacher."""
        counts: dict[str, int] = {}
        missing: dict[str, str] = {}
        for row in rows:
            name = self.teacher_of(row)
            if name in self.teachers:
                counts[name] = counts.get(name, 0) + 1
            else:
                missing.setdefault(name, row.get("problem_id", "?"))
        if missing:
            shown = ", ".join(f"{v!r} (problem {p})" for v, p in list(missing.items())[:5])
            raise PreflightError(
                f"onpolicy.teacher_route {self.route!r}: {len(missing)} value(s) name no teacher: {shown}; the teachers "
                f"are {', '.join(self.teachers)}. Fix: a teacher_servers entry with that name, or the right column")
        return counts

    # ------------------------------------------------------------------------------------------
    # HTTP

    def _post(self, t: ServedTeacher, body: dict) -> dict:
        import requests

        try:
            r = self._http.post(f"{t.url}/v1/completions", json=body, timeout=self.cfg.teacher_timeout)
        except requests.RequestException as e:
            raise TeacherServerError(f"teacher {t.name!r} at {t.url}: no answer ({type(e).__name__}: {e}); is "
                                     "`vllm serve` running there?") from None
        if r.status_code != 200:
            raise TeacherServerError(f"teacher {t.name!r} at {t.url} answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def describe(self) -> None:
        """Ask every server what it serves (model name, checkpoint path, context); refuses an unreachable server
        or a model it does not serve."""
        import requests

        for t in self.teachers.values():
            try:
                r = self._http.get(f"{t.url}/v1/models", timeout=30)
                r.raise_for_status()
                data = r.json()["data"]
            except (requests.RequestException, ValueError, KeyError) as e:
                raise PreflightError(
                    f"onpolicy.teacher_servers {t.name!r}: {t.url}/v1/models did not answer ({type(e).__name__}: {e}). "
                    "Start the teacher first (vllm serve <checkpoint> --max-logprobs 64; recipes/onpolicy/"
                    "slurm-teacher-servers.sbatch) and check the url") from None
            models = {m["id"]: m for m in data}
            if not t.model and t.name in models:  # a server serving several names: the one the teacher is called
                t.model = t.name
            if not t.model:
                if len(models) != 1:
                    raise PreflightError(f"onpolicy.teacher_servers {t.name!r}: {t.url} serves {sorted(models)}; "
                                         "name one with `model:`")
                t.model = next(iter(models))
            if t.model not in models:
                raise PreflightError(f"onpolicy.teacher_servers {t.name!r}: {t.url} does not serve {t.model!r} "
                                     f"(it serves {sorted(models)})")
            m = models[t.model]
            t.root, t.max_model_len = str(m.get("root") or ""), int(m.get("max_model_len") or 0)

    def probe(self, ids: list[int]) -> None:
        """One scoring request per server at the configured k: a server started without enough --max-logprobs is
        refused here, with the flag to add, not at the first step."""
        for t in self.teachers.values():
            saved = dict(t.stats)
            try:
                self._score_one(t, ids, 1)
                t.stats = saved  # the manifest counts training's requests only
            except TeacherServerError as e:
                need = "-1" if self.k == -1 else str(self.k)
                raise PreflightError(f"onpolicy.teacher_servers {t.name!r}: a scoring request with prompt_logprobs "
                                     f"{self.k} failed: {e}. A vLLM server returns at most --max-logprobs (default 20) "
                                     f"tokens a position: start it with --max-logprobs {need}, or lower "
                                     "onpolicy.teacher_top_k") from None

    # ------------------------------------------------------------------------------------------
    # scoring

    def _score_one(self, t: ServedTeacher, ids: list[int], prompt_len: int) -> list[dict[int, float]]:
        """The teacher's log-probabilities at the positions of ids[prompt_len:]: {token id: logprob} for its top-k
        and the token there."""
        body = {"model": t.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": self.k, "return_tokens_as_token_ids": True}
        t0 = time.perf_counter()
        data = self._post(t, body)
        try:
            plp = data["choices"][0]["prompt_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise TeacherServerError(f"teacher {t.name!r} at {t.url}: the answer has no prompt_logprobs (an "
                                     "OpenAI-compatible server that is not vLLM?)") from None
        if plp is None or len(plp) != len(ids):
            raise TeacherServerError(f"teacher {t.name!r} at {t.url}: {0 if plp is None else len(plp)} prompt "
                                     f"logprobs for {len(ids)} tokens")
        out = []
        for pos in range(prompt_len, len(ids)):
            d = plp[pos] or {}
            got = {int(k): float(v["logprob"]) for k, v in d.items()}
            if ids[pos] not in got:
                raise TeacherServerError(f"teacher {t.name!r}: no logprob for the sampled token at position {pos}")
            out.append(got)
        with self._lock:
            t.stats["score_requests"] += 1
            t.stats["scored_tokens"] += len(ids) - prompt_len
            t.stats["forward_tokens"] += len(ids)
            t.stats["request_seconds"] += time.perf_counter() - t0
        return out

    def score(self, names: list[str], sequences: list[list[int]], prompt_lens: list[int]) -> list[list[dict[int, float]]]:
        """Score every sequence on its teacher, concurrently; in order."""
        futs = [self._pool.submit(self._score_one, self.teachers[n], s, p)
                for n, s, p in zip(names, sequences, prompt_lens, strict=True)]
        return [f.result() for f in futs]

    def to_tensors(self, scored: list[list[dict[int, float]]], width: int, vocab: int):
        """(ids, logprobs) of shape (rows, width, S): the support at each completion position, padded with id 0
        and -inf (S = k + 1 slots; the whole vocabulary in id order with k = -1)."""
        import torch

        rows = len(scored)
        if self.k == -1:
            lp = torch.full((rows, width, vocab), -math.inf)
            for i, seq in enumerate(scored):
                for j, d in enumerate(seq):
                    idx = torch.tensor(list(d.keys()))
                    keep = idx < vocab  # vLLM's vocabulary is the model's (padded) output size
                    lp[i, j, idx[keep]] = torch.tensor(list(d.values()))[keep]
            return None, lp
        # vLLM answers k entries a position, k + 1 when the sampled token is not among the top k
        slots = self.k + 1
        pad_ids, pad_lp = [0] * slots, [-math.inf] * slots
        id_rows, lp_rows = [], []
        for seq in scored:
            id_rows.append([(list(d)[:slots] + pad_ids)[:slots] for d in seq] + [pad_ids] * (width - len(seq)))
            lp_rows.append([(list(d.values())[:slots] + pad_lp)[:slots] for d in seq] + [pad_lp] * (width - len(seq)))
        return (torch.tensor(id_rows, dtype=torch.long).reshape(rows, width, slots),
                torch.tensor(lp_rows, dtype=torch.float32).reshape(rows, width, slots))

    # ------------------------------------------------------------------------------------------
    # sampling (lmbda < 1)

    def _sample_one(self, t: ServedTeacher, prompt: list[int], sampling: dict) -> list[int]:
        body = {"model": t.model, "prompt": prompt, "n": 1, "return_token_ids": True, "skip_special_tokens": False,
                **sampling}
        t0 = time.perf_counter()
        data = self._post(t, body)
        try:
            ids = list(data["choices"][0]["token_ids"])
        except (KeyError, IndexError, TypeError):
            raise TeacherServerError(f"teacher {t.name!r} at {t.url}: the answer has no token_ids (vLLM >= 0.10.2 "
                                     "returns them with return_token_ids)") from None
        with self._lock:
            t.stats["sample_requests"] += 1
            t.stats["sampled_tokens"] += len(ids)
            t.stats["request_seconds"] += time.perf_counter() - t0
        return ids

    def sample(self, names: list[str], prompts: list[list[int]], sampling: dict) -> list[list[int]]:
        futs = [self._pool.submit(self._sample_one, self.teachers[n], p, sampling)
                for n, p in zip(names, prompts, strict=True)]
        return [f.result() for f in futs]

    # ------------------------------------------------------------------------------------------

    def manifest(self) -> dict:
        """What each teacher is and what it did (teachers.json beside the checkpoint)."""
        return {"route": self.route, "top_k": self.k, "tail": self.tail,
                "support": "whole vocabulary" if self.k == -1 else
                f"top-{self.k} + the sampled token" + (" + tail bucket" if self.tail else ""),
                "teachers": [{"name": t.name, "url": t.url, "model": t.model, "root": t.root,
                              "max_model_len": t.max_model_len, "checkpoint": t.checkpoint, "params": t.params,
                              **t.stats} for t in self.teachers.values()]}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()


# ----------------------------------------------------------------------------------------------
# the divergence on the served support


def sparse_divergence(s_logits, ids, t_lp, beta: float, temperature: float = 1.0, tail: bool = True,
                      reverse: bool = False):
    """Per-position generalized JSD between the student and the teacher, on the teacher's support.

    s_logits: (N, V) the student's logits; t_lp: (N, S) the teacher's log-probabilities (temperature 1) of the
    support tokens `ids` (N, S), -inf where a slot is unused; ids None: t_lp is the whole vocabulary (S = V).
    beta as TRL: 0 forward KL(teacher || student), 1 reverse KL(student || teacher), between: beta KL(t || m) +
    (1 - beta) KL(s || m) with m = beta t + (1 - beta) s. With the whole vocabulary this is TRL's loss (also at a
    temperature: the teacher's log-probabilities are re-tempered exactly). On a top-k support, `tail` adds one
    bucket for the mass outside the support on each side (a coarser distribution: the divergence is a lower bound of
    the full one, equal when the support holds all the mass); without it both sides renormalize on the support.
    Returns (divergence (N,), student entropy (N,)), and with `reverse` also the reverse KL on the same support
    (N,), without gradient (the logged `reverse_kl`, from the same logits)."""
    import torch

    s_all = torch.log_softmax(s_logits.float() / temperature, dim=-1)
    entropy = -(s_all.exp() * s_all).sum(-1)
    if ids is None:
        t = torch.log_softmax(t_lp.float() / temperature, dim=-1)
        s, valid = s_all, torch.isfinite(t)
    else:
        valid = torch.isfinite(t_lp)
        s = torch.where(valid, s_all.gather(-1, ids), -math.inf)
        t = t_lp.float()
        if tail:
            def with_tail(x):
                # 1 - (mass on the support) cancels: in float64, else a tail of 1e-5 carries a 1% error
                mass = torch.logsumexp(x.double(), dim=-1, keepdim=True).clamp(max=-1e-12)
                return torch.cat([x, torch.log(-torch.expm1(mass)).to(x.dtype)], dim=-1)

            s, t = with_tail(s), with_tail(t)
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=-1)
        else:
            s = s - torch.logsumexp(s, dim=-1, keepdim=True)
            t = t - torch.logsumexp(t, dim=-1, keepdim=True)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    s, t = torch.where(valid, s, zero), torch.where(valid, t, zero)
    ps, pt = torch.where(valid, s.exp(), zero), torch.where(valid, t.exp(), zero)
    if beta == 0:
        d = pt * (t - s)
    elif beta == 1:
        d = ps * (s - t)
    else:
        b = torch.tensor(beta, dtype=s.dtype, device=s.device)
        m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        d = b * pt * (t - m) + (1 - b) * ps * (s - m)
    d = torch.where(valid, d, zero).sum(-1)
    if not reverse:
        return d, entropy
    rkl = d.detach() if beta == 1 else torch.where(valid, ps * (s - t), zero).sum(-1).detach()
    return d, entropy, rkl


def served_loss_sums(hidden, head, ids, t_lp, mask, beta, temperature, tail, chunk: int = 512):
    """(divergence sum, reverse-KL sum (no grad), entropy sum (no grad), valid positions) over the masked positions
    of one micro-batch. The student's logits come from its head module (`head`: a ZeRO-3-partitioned head is
    gathered by the call) `chunk` positions at a time and are recomputed in the backward (torch.utils.checkpoint),
    so the (positions x vocabulary) logits never exist at once."""
    import torch
    from torch.utils.checkpoint import checkpoint

    valid = mask.reshape(-1) != 0
    h = hidden.reshape(-1, hidden.size(-1))[valid]
    lp = t_lp.reshape(-1, t_lp.size(-1))[valid].to(h.device)
    sup = None if ids is None else ids.reshape(-1, ids.size(-1))[valid].to(h.device)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    rkl = torch.zeros((), dtype=torch.float32, device=h.device)
    ent = torch.zeros((), dtype=torch.float32, device=h.device)

    def part(hc, lc, sc):  # one pass through the head for the loss, the entropy and the logged reverse KL
        d, e, r = sparse_divergence(head(hc), sc, lc, beta, temperature, tail, reverse=True)
        return d.sum(), e.sum().detach(), r.sum()

    for a in range(0, h.size(0), chunk):
        hc, lc = h[a:a + chunk], lp[a:a + chunk]
        sc = None if sup is None else sup[a:a + chunk]
        d, e, r = checkpoint(part, hc, lc, sc, use_reentrant=False) if torch.is_grad_enabled() else part(hc, lc, sc)
        total, ent, rkl = total + d, ent + e, rkl + r
    if h.size(0) == 0:  # keep the graph (DDP expects every parameter to get a gradient)
        total = total + 0.0 * hidden.sum()
    return total, rkl, ent, valid.sum()
