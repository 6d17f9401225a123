"""The openai teacher against a local HTTP server that fails on purpose (429, 500, hangs).

The server is a fault injector on 127.0.0.1 speaking the chat-completions protocol; the teacher
uses the real `openai` client, its real retry logic and the real sample store.
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

    def __init__(self, script=(), after=200, ok_limit=None):
        self.script = list(script)
        self.after = after
        self.ok_limit = ok_limit  # after this many successes, answer 500 forever
        self.seen: list[tuple[int, dict, str]] = []
        self.ok = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    status = outer.script.pop(0) if outer.script else outer.after
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
                    self.send_header("retry-after-ms", "20")
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
    assert x["teacher"] == {"model": "served-model", "backend": "openai", "revision": None}
    # per-sample seeds and the recipe's sampling reach the server; the key reaches it, not the manifest
    bodies = [b for st, b, _ in srv.seen if st == 200]
    assert len({b["seed"] for b in bodies}) == 8 and all(b["max_tokens"] == 8 and b["n"] == 1 for b in bodies)
    assert all(auth == "Bearer sk-secret-xyz" for _, _, auth in srv.seen)
    assert "sk-secret-xyz" not in (tmp_path / "s" / "manifest.json").read_text()


def test_hanging_server_gives_a_clear_error(tmp_path, server_factory):
    srv = server_factory(after="hang")
    with pytest.raises(TeacherError) as e:
        generate(recipe(srv.url, **{"teacher.request_timeout": 0.5, "teacher.max_retries": 1}), tmp_path / "s",
                 progress=False)
    assert srv.url in str(e.value) and "Timeout" in str(e.value) and "after 1 retries" in str(e.value)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["runs"][-1]["status"] == "failed"


def test_failure_midway_keeps_samples_and_rerun_completes(tmp_path, server_factory):
    broken = server_factory(ok_limit=3)
    with pytest.raises(TeacherError, match="HTTP 500 after 1 retries"):
        generate(recipe(broken.url, **{"teacher.max_retries": 1, "teacher.max_concurrency": 1}), tmp_path / "s",
                 progress=False)
    kept = SampleStore(tmp_path / "s").keys()
    assert len(kept) == 3
    healthy = server_factory()
    s = generate(recipe(healthy.url), tmp_path / "s", progress=False)
    assert (s.present, s.generated) == (3, 5)
    lines = (tmp_path / "s" / "data" / "part-all.jsonl").read_text().splitlines()
    assert len(lines) == 8 and len({json.loads(x)["key"] for x in lines}) == 8


def test_missing_base_url_is_a_clear_error(tmp_path):
    with pytest.raises(TeacherError, match="needs teacher.base_url"):
        generate(tiny_recipe(**{"teacher.backend": "openai"}), tmp_path / "s", progress=False)
