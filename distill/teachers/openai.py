"""The OpenAI-compatible teacher: `vllm serve`, SGLang, or a hosted reasoning API, one or many servers.

One chat-completion request per sample (n=1, the sample's own seed). Built for millions of requests:

- **A bounded window fed lazily.** `max_concurrency` workers each take the next request from the
  caller's (lazy) iterator when they have room, so memory holds the window, not the plan, and each
  completion costs O(1) work. Results stream back through a queue as they finish, so one long trace
  never holds up the samples behind it.
- **Failures are data.** A request the server refuses for good (400, 413, 422: a prompt over the
  context, a malformed request) is not retried; one that keeps failing (408/409/429/5xx, timeouts,
  connection errors) is retried `max_retries` times with exponential backoff, jitter and the
  server's Retry-After. Either way it comes back as a `Failure` (cause, last status, message,
  attempts) that the caller stores; the run goes on. Wrong credentials or model name (401, 403,
  404) stop the run at once: every request would fail the same way.
- **Many servers.** `teacher.base_url` may be a list. Each request goes to the healthy endpoint with
  the fewest requests in flight; an endpoint that fails to connect, times out or answers 5xx is
  taken out for a cooldown that doubles while it keeps failing (1 s to 60 s) and its requests go to
  the others; after the cooldown it gets requests again, and one success restores it.
- **Rate limits are respected.** A 429 (or 408/409/503 with `Retry-After` / `retry-after-ms`) cools
  that server down for the time it asks (without one: 1 s, doubling with each such answer in a row,
  up to 60 s), for every request, and the request that got it waits that long before its next try,
  even when another server is free: a hosted API's limit is usually per key, across its endpoints.
- **`max_tokens` clamped to the context.** vLLM reports `max_model_len` on `/v1/models`; a request
  asks for at most `max_model_len` minus a bound on the prompt's tokens (two characters a token).
  When a server still answers "maximum context length" (any server, any tokenizer), the exact prompt
  length in its message sets `max_tokens` and the request is sent again. The value sent is stored
  with the sample.

When the server returns the reasoning separately (`reasoning_content`, as the DeepSeek API and
vLLM's reasoning parsers do; `reasoning` in newer vLLM), the completion is rebuilt as
`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`, so every backend yields the same sample.

HTTP is aiohttp's, not the official `openai` client's: measured against an instant local server
(`benchmarks/generate_client.py`, 2 cores, window 256) the official client spent about 4 ms of CPU
per request, 70% of it in httpcore's connection pool, which scans every pooled connection on each
request (O(window) per request), and the rest in building and validating pydantic models; its
retries also cannot move a request to another endpoint nor say how many attempts it took. The
protocol used is small (POST /chat/completions, GET /models) and follows the OpenAI API reference.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator

from distill.config import SamplingConfig, TeacherConfig
from distill.teachers.base import Completion, Failure, Request, TeacherError

_DONE = object()
FLUSH_EVERY = 16  # completions per batch handed to the store (and fsynced)
FLUSH_SECONDS = 2.0  # or sooner, so a slow server still shows progress and loses little on a crash
NOT_RETRIED = {400, 413, 422}  # the server refuses this request; sending it again changes nothing
FATAL = {401: "the API key is refused (set the variable named by teacher.api_key_env)",
         403: "the API key may not use this model",
         404: "the server does not serve this model or path (check teacher.model against GET /v1/models, "
              "and that teacher.base_url ends in /v1)"}
COOLDOWN_MIN, COOLDOWN_MAX = 1.0, 60.0
CHARS_PER_TOKEN_BOUND = 2  # prompts are bounded by chars / 2 tokens for the up-front clamp
_CTX = re.compile(r"maximum context length is (\d+)", re.I)
_PROMPT_TOKENS = re.compile(r"(\d+) (?:tokens )?in the messages|has (\d+) input tokens|(\d+) prompt tokens", re.I)


def base_urls(cfg: TeacherConfig) -> list[str]:
    urls = cfg.base_url if isinstance(cfg.base_url, list) else [cfg.base_url] if cfg.base_url else []
    return [u.rstrip("/") for u in urls if u]


class Endpoint:
    """One server: its client, requests in flight, and health."""

    def __init__(self, url: str, client):
        self.url = url
        self.client = client
        self.in_flight = 0
        self.failures = 0  # consecutive
        self.limited = 0  # consecutive rate-limit answers (429, or 408/409/503 with Retry-After)
        self.down_until = 0.0
        self.max_model_len: int | None = None
        self.served = 0
        self.routing = False  # set when there are other endpoints to route around this one

    def healthy(self, now: float) -> bool:
        return now >= self.down_until

    def trouble(self) -> None:
        """Take the endpoint out for a cooldown. Only a failure while it is in service lengthens the
        cooldown: the requests that were in flight when it died fail together and count once."""
        if not self.routing:  # the only server: nowhere else to send, each request backs off alone
            return
        now = time.monotonic()
        if now < self.down_until:
            return
        self.failures += 1
        self.down_until = now + min(COOLDOWN_MAX, COOLDOWN_MIN * 2 ** (self.failures - 1))

    def rate_limited(self, wait: float | None) -> float:
        """The server said "not now": no request goes to it until its Retry-After has passed (or, without
        one, a backoff that doubles with each answer in a row, 1 s to 60 s), whether or not there are
        other servers. Returns the wait."""
        self.limited += 1
        if wait is None:
            wait = min(COOLDOWN_MAX, COOLDOWN_MIN * 2 ** (self.limited - 1)) * random.uniform(0.8, 1.2)
        self.down_until = max(self.down_until, time.monotonic() + wait)
        return wait

    def ok(self) -> None:
        self.failures = 0
        self.limited = 0
        self.down_until = 0.0
        self.served += 1


class OpenAITeacher:
    backend = "openai"

    def __init__(self, cfg: TeacherConfig):
        self.urls = base_urls(cfg)
        if not self.urls:
            raise TeacherError("teacher.backend=openai needs teacher.base_url, e.g. http://gpu-node:8000/v1 "
                               "(or a list of them)")
        self.cfg = cfg
        self.model_name = cfg.model
        self.revision = None
        self.template_hash = None  # the server renders the prompt with its own template
        # The key comes from the environment only; it is never written to the manifest or the logs.
        self._api_key = os.environ.get(cfg.api_key_env) or "EMPTY"  # vllm serve accepts any key by default
        self.stats: dict = {}

    # -- the caller's side: a thread that stores what comes back --------------------------------

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[list[Completion | Failure]]:
        q: queue.Queue = queue.Queue(maxsize=4 * self.cfg.max_concurrency + FLUSH_EVERY)
        stop = threading.Event()
        worker = threading.Thread(target=lambda: asyncio.run(self._run(iter(requests), sampling, q, stop)),
                                  daemon=True)
        worker.start()
        batch: list = []
        last = time.monotonic()
        try:
            while True:
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    item = None
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if batch:
                        yield batch  # store what came back before the error
                        batch = []
                    raise item
                if item is not None:
                    batch.append(item)
                # A failure goes out at once: the run's max_failures is judged per batch, and holding
                # failures back (up to FLUSH_EVERY) would keep a broken server fed with requests.
                failed = isinstance(item, Failure)
                if batch and (failed or len(batch) >= FLUSH_EVERY or time.monotonic() - last >= FLUSH_SECONDS):
                    yield batch
                    batch, last = [], time.monotonic()
            if batch:
                yield batch
        finally:
            stop.set()  # Ctrl-C or an error: the loop cancels what is in flight
            while worker.is_alive():  # unblock a worker waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.1)

    # -- the event loop's side --------------------------------------------------------------------

    async def _run(self, it: Iterator[Request], sampling: SamplingConfig, q: queue.Queue,
                   stop: threading.Event) -> None:

        import aiohttp

        # One session per endpoint, its connector holding up to a window's keep-alive connections.
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout)
        eps = [Endpoint(u, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.max_concurrency + 8, limit_per_host=0, ttl_dns_cache=300),
            timeout=timeout, headers={"Authorization": f"Bearer {self._api_key}"},
            json_serialize=_dumps)) for u in self.urls]
        for e in eps:
            e.routing = len(eps) > 1
        self.stats = {"endpoints": {e.url: e for e in eps}, "clamped": 0}
        loop = asyncio.get_running_loop()

        async def put(item) -> None:
            # The queue is bounded: a slow store slows the workers instead of filling memory.
            while not stop.is_set():
                try:
                    q.put_nowait(item)
                    return
                except queue.Full:
                    await asyncio.sleep(0.01)

        async def worker() -> None:
            while not stop.is_set():
                try:
                    r = next(it)  # one at a time: nothing is read from the plan before there is room
                except StopIteration:
                    return
                await put(await self._one(eps, r, sampling))

        try:
            await asyncio.gather(*(self._discover(e) for e in eps))
            workers = asyncio.gather(*(worker() for _ in range(self.cfg.max_concurrency)))
            watcher = loop.create_task(_wait_for(stop))
            done, _ = await asyncio.wait({workers, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if workers in done:
                workers.result()  # a fatal error (401/403/404) re-raised here
                await put(_DONE)
            workers.cancel()
            watcher.cancel()
            await asyncio.gather(workers, watcher, return_exceptions=True)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            q.put(e)
        finally:
            for e in eps:
                await e.client.close()

    async def _discover(self, ep: Endpoint) -> None:
        """max_model_len from GET /v1/models (vLLM); an endpoint that does not answer starts down."""
        import aiohttp

        try:
            async with ep.client.get(f"{ep.url}/models", timeout=aiohttp.ClientTimeout(
                    total=min(10.0, self.cfg.request_timeout))) as resp:
                if resp.status != 200:  # it answers, without a model list (some hosted APIs): no clamp
                    return
                models = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):  # no answer: cool down, retry elsewhere
            ep.trouble()
            return
        for m in (models.get("data") or []) if isinstance(models, dict) else []:
            if isinstance(m, dict) and m.get("id") == self.cfg.model and isinstance(m.get("max_model_len"), int):
                ep.max_model_len = m["max_model_len"]

    async def _pick(self, eps: list[Endpoint], avoid: Endpoint | None) -> Endpoint:
        """The healthy endpoint with the fewest requests in flight (not `avoid` if another is healthy);
        when every one is cooling down, wait for the first to come back."""
        now = time.monotonic()
        healthy = [e for e in eps if e.healthy(now)]
        if len(healthy) > 1 and avoid in healthy:
            healthy.remove(avoid)
        if healthy:
            return min(healthy, key=lambda e: (e.in_flight, e.failures))
        first = min(eps, key=lambda e: e.down_until)
        await asyncio.sleep(max(0.0, first.down_until - now))
        return first

    def _max_tokens(self, ep: Endpoint, r: Request, sampling: SamplingConfig) -> int:
        want = sampling.max_tokens
        if ep.max_model_len:
            chars = sum(len(str(m.get("content") or "")) for m in r.prompt.messages)
            bound = math.ceil(chars / CHARS_PER_TOKEN_BOUND) + 16 * len(r.prompt.messages)
            want = max(1, min(want, ep.max_model_len - bound))
        return want

    async def _one(self, eps: list[Endpoint], r: Request, sampling: SamplingConfig) -> Completion | Failure:
        import aiohttp

        if r.prompt.raw:
            raise TeacherError("the openai backend sends chat messages; the r1-zero raw-text template needs "
                               "teacher.backend=hf (or vllm)")
        attempts, last_ep, exact = 0, None, None
        retries = self.cfg.max_retries
        body = {"model": self.cfg.model, "messages": r.prompt.messages, "n": 1, "temperature": sampling.temperature,
                "top_p": sampling.top_p}
        if self.cfg.per_sample_seed:
            body["seed"] = r.seed % (2**31)
        # vLLM's loop and budget controls, in the request body as its server reads them
        if sampling.repetition_detection is not None:
            body["repetition_detection"] = sampling.repetition_detection.model_dump()
        if sampling.thinking_token_budget is not None:
            body["thinking_token_budget"] = sampling.thinking_token_budget
        body.update(self.cfg.extra_body or {})
        while True:
            ep = await self._pick(eps, last_ep)
            last_ep = ep
            attempts += 1
            body["max_tokens"] = max_tokens = exact if exact is not None else self._max_tokens(ep, r, sampling)
            ep.in_flight += 1
            status, why, retry_after, limited = None, "", None, None
            try:
                async with ep.client.post(f"{ep.url}/chat/completions", json=body) as resp:
                    status = resp.status
                    raw = await resp.read()
                    if status == 200:
                        data = json.loads(raw)
                        ep.ok()
                        if max_tokens < sampling.max_tokens:
                            self.stats["clamped"] += 1
                        return self._completion(r, data, max_tokens)
                    why = _message(raw)
                    retry_after = _retry_after(resp.headers)
            except TimeoutError:
                why = f"no answer within request_timeout={self.cfg.request_timeout}s"
                ep.trouble()
            except aiohttp.ClientError as e:
                status = None
                why = f"connection failed ({type(e).__name__}: {e})"
                ep.trouble()
            except (ValueError, KeyError, IndexError, TypeError) as e:  # a 200 that is not a chat completion
                return Failure(r.key, "bad_response", status, f"HTTP 200 from {ep.url} but not a chat completion "
                               f"({type(e).__name__}: {e}); is teacher.base_url an OpenAI-compatible /v1?",
                               attempts, ep.url)
            finally:
                ep.in_flight -= 1
            if status is not None:
                if status in FATAL:
                    raise TeacherError(f"{ep.url}: HTTP {status} for model {self.cfg.model!r}: {FATAL[status]} "
                                       f"({why})")
                if status == 400 and exact is None:
                    fitted = _fit_context(why, sampling.max_tokens)
                    if fitted is not None:  # the prompt's exact length is in the message: send it again
                        exact = fitted
                        continue
                if status in NOT_RETRIED or (400 <= status < 500 and status not in (408, 409, 429)):
                    return Failure(r.key, "rejected", status,
                                   f"HTTP {status} from {ep.url}, not retried (the server refuses this request; "
                                   f"sending it again changes nothing): {why}", attempts, ep.url)
                if status == 429 or (status in (408, 409, 503) and retry_after is not None):
                    # A rate limit: that server cools down, and this request waits out the same backoff
                    # before it goes anywhere (another server is no reason to retry sooner: a hosted API's
                    # limit is usually per key, shared by all its endpoints).
                    limited = ep.rate_limited(retry_after)
                elif status >= 500:
                    ep.trouble()
            if attempts > retries:
                what = f"HTTP {status}" if status else why.split(" (")[0]
                return Failure(r.key, "retries_exhausted", status,
                               f"{what} after {attempts} attempts ({retries} retries, last at {ep.url}): {why}",
                               attempts, ep.url)
            if limited is not None:
                await asyncio.sleep(limited)
                continue
            others = any(e is not ep and e.healthy(time.monotonic()) for e in eps)
            if retry_after is not None or not others:  # the same server again, or all busy: back off
                delay = retry_after if retry_after is not None else min(60.0, 0.5 * 2 ** (attempts - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.5) if retry_after is None else delay)

    def _completion(self, r: Request, data: dict, max_tokens: int) -> Completion:
        choice = data["choices"][0]
        msg = choice.get("message") or {}
        content = msg.get("content") or ""
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        text = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}" if reasoning else content
        # The stored completion starts with the prompt's prefill; a server cannot be made to start
        # there, so if the text already does, drop it here and generate() puts it back once.
        if r.prompt.prefill and text.startswith(r.prompt.prefill.strip()):
            text = text[len(r.prompt.prefill.strip()):].lstrip("\n")
        usage = data.get("usage") or {}
        return Completion(
            key=r.key, text=text, finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0,
            max_tokens=max_tokens,
        )

    def close(self) -> None:
        pass


def _message(raw: bytes) -> str:
    """The error text of an OpenAI-style error body ({"error": {"message"}} or vLLM's {"message"})."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace")
    if isinstance(body, dict):
        err = body.get("error")
        m = err.get("message") if isinstance(err, dict) else body.get("message") or err
        if m:
            return str(m)[:300]
    return str(body)[:300]


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _fit_context(message: str, want: int) -> int | None:
    """max_tokens that fits, from a "maximum context length" refusal naming the prompt's length."""
    ctx, prompt = _CTX.search(message), _PROMPT_TOKENS.search(message)
    if not ctx or not prompt:
        return None
    room = int(ctx.group(1)) - int(next(g for g in prompt.groups() if g))
    return min(want, room) if room > 0 else None


def _retry_after(headers) -> float | None:
    """The server's own wait, from `retry-after-ms` or `retry-after` (seconds), capped at 2 minutes."""
    try:
        if headers.get("retry-after-ms") is not None:
            return min(120.0, max(0.0, float(headers["retry-after-ms"]) / 1000))
        v = headers.get("retry-after")
        return min(120.0, max(0.0, float(v))) if v is not None else None
    except (AttributeError, ValueError, TypeError):
        return None


async def _wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.2)
