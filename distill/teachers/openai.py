"""The OpenAI-compatible teacher: `vllm serve`, SGLang, or a hosted reasoning API.

One chat-completion request per sample (n=1, the sample's own seed), at most `max_concurrency` in
flight. Retries are the official client's own: exponential backoff with jitter, honouring
Retry-After, on 408/409/429/5xx, connection errors and timeouts, `max_retries` times; after that the
run stops with an error naming the server and the last status, and every sample already returned
is stored. Results stream back as they finish (a background event loop feeds a queue), so one long
trace never holds up the samples behind it.

When the server returns the reasoning separately (`reasoning_content`, as the DeepSeek API and
vLLM's reasoning parsers do; `reasoning` in newer vLLM), the completion is rebuilt as
`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`, so every backend yields the same sample.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Iterator

from distill.config import SamplingConfig, TeacherConfig
from distill.teachers.base import Completion, Request, TeacherError

_DONE = object()
FLUSH_EVERY = 16  # completions per batch handed to the store (and fsynced)
FLUSH_SECONDS = 2.0  # or sooner, so a slow server still shows progress and loses little on a crash


class OpenAITeacher:
    backend = "openai"

    def __init__(self, cfg: TeacherConfig):
        if not cfg.base_url:
            raise TeacherError("teacher.backend=openai needs teacher.base_url, e.g. http://gpu-node:8000/v1")
        self.cfg = cfg
        self.model_name = cfg.model
        self.revision = None
        self.template_hash = None  # the server renders the prompt with its own template
        # The key comes from the environment only; it is never written to the manifest or the logs.
        self._api_key = os.environ.get(cfg.api_key_env) or "EMPTY"  # vllm serve accepts any key by default

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> Iterator[list[Completion]]:
        q: queue.Queue = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(target=lambda: asyncio.run(self._run(requests, sampling, q, stop)), daemon=True)
        worker.start()
        batch: list[Completion] = []
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
                        yield batch  # store what came back before the failure
                        batch = []
                    raise item
                if item is not None:
                    batch.append(item)
                if batch and (len(batch) >= FLUSH_EVERY or time.monotonic() - last >= FLUSH_SECONDS):
                    yield batch
                    batch, last = [], time.monotonic()
            if batch:
                yield batch
        finally:
            stop.set()  # Ctrl-C or an error: the loop cancels what is in flight
            worker.join(timeout=10)

    async def _run(self, requests: list[Request], sampling: SamplingConfig, q: queue.Queue,
                   stop: threading.Event) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._api_key,
                                    timeout=self.cfg.request_timeout, max_retries=self.cfg.max_retries)
        sem = asyncio.Semaphore(self.cfg.max_concurrency)

        async def one(r: Request) -> None:
            async with sem:
                if stop.is_set():
                    return
                q.put(await self._complete(client, r, sampling))

        tasks = [asyncio.create_task(one(r)) for r in requests]
        watcher = asyncio.create_task(_wait_for(stop))
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending | {watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    break
                pending.discard(watcher)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()
            q.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            q.put(e)
        finally:
            for t in tasks:
                t.cancel()
            watcher.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _complete(self, client, r: Request, sampling: SamplingConfig) -> Completion:
        import openai

        if r.prompt.raw:
            raise TeacherError("the openai backend sends chat messages; the r1-zero raw-text template needs "
                               "teacher.backend=hf (or vllm)")
        try:
            resp = await client.chat.completions.create(
                model=self.cfg.model, messages=r.prompt.messages, n=1, temperature=sampling.temperature,
                top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                seed=r.seed % (2**31) if self.cfg.per_sample_seed else None,
                extra_body=self.cfg.extra_body or None,
            )
        except openai.APIStatusError as e:
            raise TeacherError(f"{self.cfg.base_url}: HTTP {e.status_code} after {self.cfg.max_retries} retries "
                               f"(sample {r.key}): {str(e)[:300]}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            raise TeacherError(f"{self.cfg.base_url}: {type(e).__name__} after {self.cfg.max_retries} retries "
                               f"(sample {r.key}; request_timeout={self.cfg.request_timeout}s): {e}") from None
        choice = resp.choices[0]
        msg = choice.message
        content = msg.content or ""
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
        if reasoning is None and msg.model_extra:
            reasoning = msg.model_extra.get("reasoning_content") or msg.model_extra.get("reasoning")
        text = f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}" if reasoning else content
        # The stored completion starts with the prompt's prefill; a server cannot be made to start
        # there, so if the text already does, drop it here and generate() puts it back once.
        if r.prompt.prefill and text.startswith(r.prompt.prefill.strip()):
            text = text[len(r.prompt.prefill.strip()):].lstrip("\n")
        usage = resp.usage
        return Completion(
            key=r.key, text=text, finish_reason=choice.finish_reason or "stop",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )

    def close(self) -> None:
        pass


async def _wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.2)
