"""Served teachers for `distill onpolicy` (distill/train/served.py), without a server: the divergence on a
served support against TRL's own kernel, the tail bucket, the chunked loss's gradient, the config rules, routing,
and what a client does when a server is absent or rate-limits. The real server: tests/test_vllm.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from distill.config import OnPolicyConfig
from distill.train.examples import PreflightError
from distill.train.served import TeacherServers, served_loss_sums, sparse_divergence

V, N, H = 97, 11, 16


def _models(seed=0):
    g = torch.Generator().manual_seed(seed)
    hs, ht = torch.randn(N, H, generator=g), torch.randn(N, H, generator=g)
    ws, wt = torch.randn(V, H, generator=g) * 0.5, torch.randn(V, H, generator=g) * 0.5
    return hs, ws, ht, wt


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_whole_vocabulary_support_is_trls_own_divergence(beta, temperature):
    """With every token served, the loss is TRL's generalized JSD (its chunked kernel, same beta convention),
    temperature included: the teacher's log-probabilities are re-tempered exactly."""
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    hs, ws, ht, wt = _models()
    want, want_ent = ChunkedDivergenceFunction.apply(hs, ws, None, ht, wt, None, beta, temperature)
    t_lp = torch.log_softmax(ht @ wt.t(), dim=-1)  # what the server returns: temperature 1
    got, ent = sparse_divergence(hs @ ws.t(), None, t_lp, beta, temperature)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ent, want_ent, rtol=1e-5, atol=1e-6)


def _support(t_lp, k, sampled):
    """The server's answer: the teacher's top-k and the sampled token (ids, logprobs), padded to k + 1 slots."""
    top = t_lp.topk(k, dim=-1).indices
    ids = torch.zeros(N, k + 1, dtype=torch.long)
    lp = torch.full((N, k + 1), float("-inf"))
    for i in range(N):
        s = sorted(set(top[i].tolist()) | {int(sampled[i])})
        ids[i, : len(s)] = torch.tensor(s)
        lp[i, : len(s)] = t_lp[i, s]
    return ids, lp


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_a_top_k_support_with_the_tail_is_a_lower_bound_that_closes_as_k_grows(beta):
    hs, ws, ht, wt = _models(1)
    s_logits, t_lp = hs @ ws.t(), torch.log_softmax(ht @ wt.t(), dim=-1)
    full = sparse_divergence(s_logits, None, t_lp, beta)[0]
    sampled = s_logits.argmax(-1)  # the token the student put there
    gaps = []
    for k in (1, 8, 32, V - 1):
        ids, lp = _support(t_lp, k, sampled)
        d = sparse_divergence(s_logits, ids, lp, beta, tail=True)[0]
        # merging tokens into one bucket never raises a divergence (up to fp32: a tail of a teacher mass near 1e-6 is
        # 1 - the sum of the support's fp32 probabilities, as a server's answer would give it)
        assert (d <= full + 1e-2).all()
        gaps.append((full - d).sum().item())
    assert gaps[0] > gaps[1] > gaps[2] > abs(gaps[3]) and abs(gaps[3]) < 1e-3 * full.sum().item()


def test_without_the_tail_a_top_1_support_teaches_nothing():
    """verl #7855's failure: one token renormalized on each side is probability 1 against 1, zero loss and zero
    gradient whatever the student does; the tail bucket keeps the mass outside and the loss."""
    hs, ws, ht, wt = _models(2)
    s_logits = (hs @ ws.t()).requires_grad_()
    t_lp = torch.log_softmax(ht @ wt.t(), dim=-1)
    top1 = t_lp.argmax(-1, keepdim=True)
    lp = t_lp.gather(-1, top1)
    no_tail = sparse_divergence(s_logits, top1, lp, 0.0, tail=False)[0].sum()
    assert no_tail.item() == 0.0
    with_tail = sparse_divergence(s_logits, top1, lp, 0.0, tail=True)[0].sum()
    with_tail.backward()
    assert with_tail.item() > 0.1 and s_logits.grad.abs().sum() > 0


def test_the_chunked_loss_has_the_unchunked_gradient():
    hs, ws, ht, wt = _models(3)
    head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(ws)
    t_lp = torch.log_softmax(ht @ wt.t(), dim=-1)
    ids, lp = _support(t_lp, 8, (hs @ ws.t()).argmax(-1))
    mask = torch.ones(N, dtype=torch.long)
    mask[3] = 0
    grads, sums = [], []
    for chunk in (3, 512):
        h = hs.clone().requires_grad_()
        total, rkl, ent, n = served_loss_sums(h.unsqueeze(0), head, ids.unsqueeze(0), lp.unsqueeze(0),
                                              mask.unsqueeze(0), 0.5, 1.0, True, chunk=chunk)
        total.backward()
        grads.append(h.grad.clone())
        sums.append((total.item(), rkl.item(), ent.item(), int(n)))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert sums[0][3] == N - 1 and grads[0][3].abs().sum() == 0  # the masked position has no loss
    for a, b in zip(sums[0][:3], sums[1][:3], strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_served_teacher_settings_are_checked():
    two = [{"name": "math", "url": "http://a:8000"}, {"name": "code", "url": "http://b:8000"}]
    with pytest.raises(ValueError, match="need onpolicy.teacher_route"):
        OnPolicyConfig(teacher_servers=two)
    with pytest.raises(ValueError, match="names must differ"):
        OnPolicyConfig(teacher_servers=[two[0], two[0]], teacher_route="domain")
    with pytest.raises(ValueError, match="cannot be re-tempered"):
        OnPolicyConfig(teacher_servers=two[:1], temperature=0.7)
    assert OnPolicyConfig(teacher_servers=two[:1], temperature=0.7, teacher_top_k=-1).served
    assert not OnPolicyConfig().served


def test_problems_go_to_the_teacher_their_column_names():
    cfg = OnPolicyConfig(teacher_servers=[{"name": "math", "url": "http://a:8000"},
                                          {"name": "code", "url": "http://b:8000/v1"}], teacher_route="domain")
    s = TeacherServers(cfg)
    try:
        assert s.teachers["code"].url == "http://b:8000"
        rows = [{"problem_id": "p1", "domain": "math"}, {"problem_id": "p2", "meta": json.dumps({"domain": "code"})},
                {"problem_id": "p3", "meta": json.dumps({"domain": "code"})}]
        assert s.check_routes(rows) == {"math": 1, "code": 2}
        with pytest.raises(PreflightError, match=r"'poetry' \(problem p4\).*teachers are math, code"):
            s.check_routes([*rows, {"problem_id": "p4", "meta": json.dumps({"domain": "poetry"})}])
    finally:
        s.close()


def test_a_server_that_is_not_there_is_refused_with_its_url():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = TeacherServers(OnPolicyConfig(teacher_servers=[{"url": f"http://127.0.0.1:{port}"}]))
    s._http.adapters["http://"].max_retries.total = 0  # noqa: SLF001 - no backoff in a test
    try:
        with pytest.raises(PreflightError, match=rf"127\.0\.0\.1:{port}/v1/models did not answer.*vllm serve"):
            s.describe()
    finally:
        s.close()


def test_a_rate_limited_scoring_request_is_retried_after_the_servers_wait():
    """A 429 with Retry-After is waited out and sent again (urllib3's Retry); the answer is then read."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if len(seen) == 1:
                self.send_response(429)
                self.send_header("Retry-After", "0")
                self.end_headers()
                return
            plp = [None] + [{str(t): {"logprob": -0.5}, "7": {"logprob": -1.0}} for t in body["prompt"][1:]]
            data = json.dumps({"choices": [{"prompt_logprobs": plp}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    s = TeacherServers(OnPolicyConfig(teacher_servers=[{"url": f"http://127.0.0.1:{httpd.server_port}", "model": "t"}],
                                      teacher_top_k=1))
    try:
        got = s.score(["default"], [[1, 2, 3]], [1])
        assert len(seen) == 2 and seen[1]["prompt_logprobs"] == 1 and seen[1]["max_tokens"] == 1
        assert got == [[{2: -0.5, 7: -1.0}, {3: -0.5, 7: -1.0}]]
        assert s.manifest()["teachers"][0]["scored_tokens"] == 2
    finally:
        s.close()
        httpd.shutdown()


def test_a_served_teacher_takes_no_memory_on_the_training_devices():
    from distill.train.onpolicy import Pair, check_memory

    cfg = OnPolicyConfig(teacher_servers=[{"url": "http://a:8000"}], lmbda=0.5)
    pair = Pair("s", "t", 7_000_000_000, 70_000_000_000, 152064, 4096, "student", served=object())
    need = check_memory(pair, cfg, "cuda", available=(200e9, "test"))
    assert need["teacher"] == 0 and not need["teacher_gathered"]
    pair.served = None
    with pytest.raises(PreflightError, match="does not fit"):
        check_memory(pair, cfg, "cuda", available=(200e9, "test"))
