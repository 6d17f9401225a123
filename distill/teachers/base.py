"""The one teacher interface: a batch of requests in, completions out, streamed batch by batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from distill.config import SamplingConfig
from distill.prompts import Prompt


class TeacherError(RuntimeError):
    """A teacher that cannot serve the run (unreachable server, exhausted retries); names the server and fix."""


@dataclass
class Request:
    key: str
    prompt: Prompt
    seed: int  # per-sample seed, derived from the key, so a rerun of a key can reproduce it


@dataclass
class Completion:
    key: str
    text: str  # generated text only; the prompt's prefill is not included
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    # What was sent, exactly enough to reproduce it: the rendered prompt's hash (local backends, which
    # render it) and the max_tokens the request carried (after any clamp to the context).
    prompt_hash: str | None = None
    max_tokens: int | None = None


@dataclass
class Failure:
    """A request that will not succeed by retrying now: stored as data, retried by the next run."""

    key: str
    cause: str  # rejected (a 4xx the server gives for this request), retries_exhausted, prompt_too_long
    status: int | None  # the last HTTP status; None for connection errors and timeouts
    message: str  # what was tried and what was not, for a person
    attempts: int
    endpoint: str | None = None


class Teacher(Protocol):
    backend: str
    model_name: str
    revision: str | None

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[list[Completion | Failure]]:
        """Yield completions (and failures) as batches finish, so the caller can store them before the
        next one. `requests` may be a lazy iterator: a teacher takes from it only as it has room."""
        ...

    def close(self) -> None: ...
