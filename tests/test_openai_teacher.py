"""The openai teacher against a local HTTP server that fails on purpose (429, 500, hangs).

The server is a fault injector on 127.0.0.1 speaking the chat-completions protocol; the teacher
runs its real HTTP client, retries, routing and failure records into the real sample store.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill.generate import generate
from distill.store import SampleStore
from distill.teachers import TeacherError
from tests.conftest import tiny_recipe


class FaultServer:
    """script: statuses for the first requests (e.g. [429, 429, 500]); then `after` (200, 500 or 'hang')."""

    def __init__(self, script=(), after=200, ok_limit=None, refuse=None, max_model_len=None, delay=0.0,
                 retry_after_ms=20, limit_for=None):
        self.script = list(script)
        self.after = after
        self.ok_limit = ok_limit  # after this many successes, answer 500 forever
        self.refuse = refuse  # body -> a status to answer with for good (e.g. 400 for one prompt), or None
        self.max_model_len = max_model_len  # reported on GET /v1/models and enforced as vLLM does
        self.delay = delay
        self.retry_after_ms = retry_after_ms  # None: error answers carry no Retry-After
        self.limit_for = limit_for  # seconds from the first request during which every request gets 429
        self.first = None
        self.seen: list[tuple[int, dict, str]] = []
        self.ok = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if not self.path.endswith("/models"):
                    return self._send(404, {"error": {"message": "no such path"}})
                card = {"id": "served-model", "object": "model", "created": 0, "owned_by": "test"}
                if outer.max_model_len:
                    card["max_model_len"] = outer.max_model_len
                self._send(200, {"object": "list", "data": [card]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.delay:
                    time.sleep(outer.delay)
                refused = outer.refuse(body) if outer.refuse else None
                if refused is None and outer.max_model_len and 11 + body["max_tokens"] > outer.max_model_len:
                    with outer.lock:
                        outer.seen.append((400, body, self.headers.get("Authorization", "")))
                    return self._send(400, {"object": "error", "type": "BadRequestError", "code": 400, "message": (
                        f"This model's maximum context length is {outer.max_model_len} tokens. However, you requested "
                        f"{11 + body['max_tokens']} tokens (11 in the messages, {body['max_tokens']} in the completion). "
                        "Please reduce the length of the messages or completion.")})
                with outer.lock:
                    outer.first = outer.first or time.monotonic()
                    status = refused or (outer.script.pop(0) if outer.script else outer.after)
                    if outer.limit_for is not None and time.monotonic() - outer.first < outer.limit_for:
                        status = 429
                    if status == 200 and outer.ok_limit is not None and outer.ok >= outer.ok_limit:
                        status = 500
                    if status == 200:
                        outer.ok += 1
                    outer.seen.append((status, body, self.headers.get("Authorization", "")))
                if status == "hang":
                    time.sleep(5)
                    return
                if status != 200:
                    data = json.dumps({"error": {"message": f"injected {status}", "type": "server_error"}}).encode()
                    self.send_response(status)
                    if outer.retry_after_ms is not None:
                        self.send_header("retry-after-ms", str(outer.retry_after_ms))
                else:
                    q = body["messages"][-1]["content"]
                    data = json.dumps({
                        "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {
                            "role": "assistant", "content": f"The answer to {q!r} is \\boxed{{7}}.",
                            "reasoning_content": f"Thinking about {q} with seed {body.get('seed')}."}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33},
                    }).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made = []

    def make(**kw):
        s = FaultServer(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def recipe(url, **over):
    sets = {"teacher.backend": "openai", "teacher.base_url": url, "teacher.model": "served-model",
            "teacher.max_retries": 4, "teacher.request_timeout": 2, "teacher.max_concurrency": 3,
            "prompt.template": "r1"}
    sets.update(over)
    return tiny_recipe(**sets)


def test_retries_then_every_sample_once(tmp_path, server_factory, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-xyz")
    srv = server_factory(script=[429, 429, 500])
    s = generate(recipe(srv.url), tmp_path / "s", progress=False)
    assert (s.status, s.generated, s.planned) == ("complete", 8, 8)
    statuses = [x[0] for x in srv.seen]
    assert statuses.count(429) == 2 and statuses.count(500) == 1 and statuses.count(200) == 8
    samples = list(SampleStore(tmp_path / "s").iter_samples())
    assert len({x["key"] for x in samples}) == 8
    x = samples[0]
    # reasoning returned separately is rebuilt into the R1 shape, the prefill appears once
    assert x["completion"].startswith("<think>\nThinking about ") and x["completion"].count("<think>") == 1
    assert x["reasoning"].startswith("Thinking about") and x["final"].endswith("\\boxed{7}.")
    assert (x["prompt_tokens"], x["completion_tokens"], x["finish_reason"]) == (11, 22, "stop")
    assert x["teacher"] == {"model": "served-model", "backend": "openai", "revision": None, "identity": "served-model"}
    # per-sample seeds and the recipe's sampling reach the server; the key reaches it, not the manifest
    bodies = [b for st, b, _ in srv.seen if st == 200]
    assert len({b["seed"] for b in bodies}) == 8 and all(b["max_tokens"] == 8 and b["n"] == 1 for b in bodies)
    assert all(auth == "Bearer sk-secret-xyz" for _, _, auth in srv.seen)
    assert "sk-secret-xyz" not in (tmp_path / "s" / "manifest.json").read_text()


def test_a_hanging_server_gives_failure_records_that_say_what_was_tried(tmp_path, server_factory):
    srv = server_factory(after="hang")
    s = generate(recipe(srv.url, **{"teacher.request_timeout": 0.5, "teacher.max_retries": 1}), tmp_path / "s",
                 progress=False)
    assert (s.status, s.generated, s.failed) == ("failures", 0, 8)
    assert s.failures_by_cause == {"retries_exhausted": 8}
    fails = SampleStore(tmp_path / "s").failures()
    assert len(fails) == 8
    f = next(iter(fails.values()))
    assert f["attempts"] == 2 and f["status"] is None and f["endpoint"] == srv.url
    assert "request_timeout=0.5s" in f["message"] and "2 attempts (1 retries" in f["message"]
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["runs"][-1]["status"] == "failures" and m["runs"][-1]["failed"] == 8


def test_failure_midway_keeps_samples_and_rerun_completes(tmp_path, server_factory):
    broken = server_factory(ok_limit=3)
    s = generate(recipe(broken.url, **{"teacher.max_retries": 1, "teacher.max_concurrency": 1}), tmp_path / "s",
                 progress=False)
    assert (s.generated, s.failed) == (3, 5)
    assert all("HTTP 500 after 2 attempts" in f["message"] for f in SampleStore(tmp_path / "s").failures().values())
    kept = SampleStore(tmp_path / "s").keys()
    assert len(kept) == 3
    healthy = server_factory()
    s = generate(recipe(healthy.url), tmp_path / "s", progress=False)
    assert (s.present, s.generated, s.failed) == (3, 5, 0)
    lines = (tmp_path / "s" / "data" / "part-all.jsonl").read_text().splitlines()
    assert len(lines) == 8 and len({json.loads(x)["key"] for x in lines}) == 8
    assert SampleStore(tmp_path / "s").failures() == {}  # every failed key has its sample now


def test_missing_base_url_is_a_clear_error(tmp_path):
    with pytest.raises(TeacherError, match="needs teacher.base_url"):
        generate(tiny_recipe(**{"teacher.backend": "openai"}), tmp_path / "s", progress=False)


# -- failures are data; many servers; the context clamp (issue 11) ---------------------------------



def test_one_refused_prompt_among_200_is_recorded_and_the_rest_stored(tmp_path, server_factory):
    from distill.data import load_problems

    r = recipe("", **{"problems.count": 200, "sampling.n": 1, "teacher.max_concurrency": 4,
                      "problems.task_options": '{"digits": 2}'})
    target = load_problems(r.problems)[117]

    def refuse(body):
        return 400 if body["messages"][-1]["content"].startswith(target.problem) else None

    srv = server_factory(refuse=refuse)
    r.teacher.base_url = srv.url
    s = generate(r, tmp_path / "s", progress=False)
    assert (s.planned, s.generated, s.failed, s.status) == (200, 199, 1, "failures")
    (f,) = SampleStore(tmp_path / "s").failures().values()
    assert f["problem_id"] == target.id and f["status"] == 400 and f["cause"] == "rejected"
    assert f["attempts"] == 1 and "not retried" in f["message"]
    assert sum(st == 400 for st, _, _ in srv.seen) == 1  # a 400 is never retried
    # the rerun sends only the refused one, not the 199 stored
    sent = len(srv.seen)
    s2 = generate(r, tmp_path / "s", progress=False)
    assert (s2.present, s2.generated, s2.failed) == (199, 0, 1) and len(srv.seen) == sent + 1


def test_max_failures_stops_a_run_whose_server_is_broken(tmp_path, server_factory):
    srv = server_factory(after=400)
    r = recipe(srv.url, **{"problems.count": 60, "sampling.n": 1, "teacher.max_concurrency": 2})
    s = generate(r, tmp_path / "s", progress=False, max_failures=5)
    assert s.status == "aborted" and 5 < s.failed < 60
    assert len(srv.seen) < 60  # it stopped sending (failures reach the run at once, not 16 at a time)
    # a share: judged once 20 requests finished
    r = recipe(srv.url, **{"problems.count": 80, "sampling.n": 1, "teacher.max_concurrency": 2,
                           "problems.task_options": '{"digits": 2}'})
    s = generate(r, tmp_path / "t", progress=False, max_failures=0.5)
    assert s.status == "aborted" and 20 <= s.failed < 80


def test_wrong_credentials_stop_at_once_with_the_fix(tmp_path, server_factory):
    srv = server_factory(after=401)
    with pytest.raises(TeacherError, match="HTTP 401.*api_key_env"):
        generate(recipe(srv.url), tmp_path / "s", progress=False)


def test_max_tokens_is_clamped_to_the_servers_context(tmp_path, server_factory):
    # /v1/models says 64 tokens; the recipe asks for 1000: the up-front bound (2 chars a token) keeps
    # every request inside, and the value sent is stored with the sample
    srv = server_factory(max_model_len=64)
    r = recipe(srv.url, **{"sampling.max_tokens": 1000, "problems.count": 2, "sampling.n": 1})
    s = generate(r, tmp_path / "s", progress=False)
    assert (s.generated, s.failed) == (2, 0) and s.clamped == 2
    rows = list(SampleStore(tmp_path / "s").iter_samples())
    assert all(0 < x["max_tokens"] <= 64 - 11 for x in rows)
    # a server that lists no max_model_len: the refusal's own numbers set max_tokens (64 - 11 = 53),
    # in vLLM's older and newer wordings
    from distill.teachers.openai import _fit_context

    msg = ("This model's maximum context length is 64 tokens. However, you requested 1011 tokens "
           "(11 in the messages, 1000 in the completion).")
    assert _fit_context(msg, 1000) == 53 and _fit_context(msg, 20) == 20
    assert _fit_context("'max_tokens' is too large: 1000. This model's maximum context length is 64 tokens "
                        "and your request has 11 input tokens (1000 > 64 - 11).", 1000) == 53
    assert _fit_context("some other 400", 1000) is None


def test_context_refusal_is_refitted_and_sent_again(tmp_path, server_factory, monkeypatch):
    import distill.teachers.openai as oa

    srv = server_factory(max_model_len=64)
    monkeypatch.setattr(oa.OpenAITeacher, "_max_tokens", lambda self, ep, r, sampling: sampling.max_tokens)
    r = recipe(srv.url, **{"sampling.max_tokens": 1000, "problems.count": 2, "sampling.n": 1})
    s = generate(r, tmp_path / "s", progress=False)
    assert (s.generated, s.failed) == (2, 0)
    assert [st for st, _, _ in srv.seen].count(400) == 2
    assert {x["max_tokens"] for x in SampleStore(tmp_path / "s").iter_samples()} == {53}


def test_two_servers_one_killed_mid_run_every_sample_stored_once(tmp_path, server_factory):
    a = server_factory(delay=0.02)
    b = server_factory(delay=0.02)
    r = recipe("", **{"problems.count": 60, "sampling.n": 2, "teacher.max_concurrency": 8})
    r.teacher.base_url = [a.url, b.url]

    def kill_a_when_busy():
        while len(a.seen) < 20:
            time.sleep(0.01)
        a.close()  # the node goes away with requests in flight

    killer = threading.Thread(target=kill_a_when_busy)
    killer.start()
    s = generate(r, tmp_path / "s", progress=False)
    killer.join()
    assert (s.generated, s.failed) == (120, 0)
    keys = [x["key"] for x in SampleStore(tmp_path / "s").iter_samples(warn=False)]
    lines = (tmp_path / "s" / "data" / "part-all.jsonl").read_text().splitlines()
    assert len(keys) == len(set(keys)) == len(lines) == 120  # exactly once
    served_a = sum(st == 200 for st, _, _ in a.seen)
    served_b = sum(st == 200 for st, _, _ in b.seen)
    assert served_a >= 15 and served_b >= 60  # both took load; b took the rest after a died


def test_two_servers_answering_429_to_a_burst_are_backed_off_and_every_sample_stored(tmp_path, server_factory):
    """Both servers rate-limit everything for 1.5 s, without Retry-After. Before, a 429 was retried at once
    on the other server (9 attempts in 0.01 s, then retries_exhausted); now each 429 cools its server
    down and the request waits out the backoff, so the burst outlasts the limit and nothing fails."""
    a = server_factory(limit_for=1.5, retry_after_ms=None)
    b = server_factory(limit_for=1.5, retry_after_ms=None)
    r = recipe([a.url, b.url], **{"problems.count": 12, "sampling.n": 1, "teacher.max_concurrency": 8,
                                  "teacher.max_retries": 8})
    t0 = time.monotonic()
    s = generate(r, tmp_path / "s", progress=False)
    assert (s.generated, s.failed) == (12, 0), s
    limited = [x for srv in (a, b) for x in srv.seen if x[0] == 429]
    assert limited and time.monotonic() - t0 >= 1.5
    # backed off: a few 429s per request at most, not one per attempt as fast as the other server answers
    assert len(limited) <= 3 * 12, len(limited)
    # a Retry-After is honoured as given: one server asking for 300 ms per 429
    c = server_factory(script=[429, 429], retry_after_ms=300)
    t0 = time.monotonic()
    s = generate(recipe(c.url, **{"problems.count": 1, "sampling.n": 1}), tmp_path / "t", progress=False)
    assert s.generated == 1 and time.monotonic() - t0 >= 0.6


def test_cli_exit_status_says_failures_and_aborts(tmp_path, server_factory):
    import subprocess
    import sys

    from tests.conftest import ROOT

    def cli(url, *extra):
        sets = {"teacher.backend": "openai", "teacher.base_url": url, "teacher.model": "served-model",
                "problems.task": "arithmetic", "problems.count": 4, "sampling.n": 1, "sampling.max_tokens": 8,
                "prompt.template": "r1", "teacher.max_retries": 0}
        args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        return subprocess.run([sys.executable, "-m", "distill", "generate", "--out", str(tmp_path / "s"), *args,
                               "--no-progress", *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)

    some = server_factory(refuse=lambda body: 422 if "1" in body["messages"][-1]["content"][:14] else None)
    r = cli(some.url)
    said = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 3, said[-2000:]
    assert "failed for good" in said and "rerun the same command to retry only the failed" in said
    broken = server_factory(after=400)
    r = cli(broken.url, "--max-failures", "0")
    assert r.returncode == 4 and "stopped:" in r.stdout + r.stderr


def test_engine_controls_travel_in_the_request_body_and_the_finish_reason_is_kept(tmp_path, server_factory):
    """sampling.repetition_detection and thinking_token_budget reach a vLLM server as its request fields."""
    srv = server_factory()
    r = recipe(srv.url, **{"problems.count": 1, "sampling.n": 1, "sampling.thinking_token_budget": 64,
                           "sampling.repetition_detection.min_count": 4})
    s = generate(r, tmp_path / "s", progress=False)
    assert s.generated == 1
    body = next(b for st, b, _ in srv.seen if st == 200)
    assert body["thinking_token_budget"] == 64
    assert body["repetition_detection"] == {"max_pattern_size": 64, "min_pattern_size": 1, "min_count": 4}
    row = next(iter(SampleStore(tmp_path / "s").iter_samples()))
    assert row["sampling"]["thinking_token_budget"] == 64  # recorded with the sample (and in its key)
