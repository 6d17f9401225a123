"""The one checked seam to TRL's internals (distill/train/trl_seam.py): each override is called by TRL in a
real run, and a TRL without one of them is refused at start, before any weights load."""

from __future__ import annotations

import pytest

from distill.train import trl_seam
from tests.conftest import ROOT, tiny_llama
from tests.test_onpolicy import _recipe


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """One real on-policy run (two random Llamas, beta 0.5 so the hidden-state path runs, lmbda 0.5 so the
    teacher samples some steps) with every override wrapped to count TRL's calls into it."""
    from distill.train.grpo import build_dataset
    from distill.train.onpolicy import build_trainer, preflight

    tmp = tmp_path_factory.mktemp("seam")
    r = _recipe(tiny_llama(tmp / "s", seed=0), tiny_llama(tmp / "t", seed=1),
                **{"onpolicy.max_steps": 4, "onpolicy.lmbda": 0.5, "onpolicy.seed": 3, "onpolicy.beta": 0.5,
                   "onpolicy.max_completion_length": 8})
    cls = trl_seam.onpolicy_trainer_class()
    counts = dict.fromkeys(trl_seam.OVERRIDES, 0)
    saved = {n: cls.__dict__[n] for n in trl_seam.OVERRIDES}
    for name, fn in saved.items():
        def counted(self, *a, _fn=fn, _name=name, **kw):
            counts[_name] += 1
            return _fn(self, *a, **kw)

        setattr(cls, name, counted)
    try:
        pair, tok = preflight(r)
        ds, _ = build_dataset(r, tok, stage="onpolicy")
        trainer = build_trainer(r, pair, ds, tok, tmp / "out")
        trainer.train()
        teacher_steps = sum(x.get("teacher_sampled") == 1.0 for x in trainer.state.log_history if "loss" in x)
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)
    return counts, teacher_steps


@pytest.mark.parametrize("name", trl_seam.OVERRIDES)
def test_trl_calls_each_override(calls, name):
    counts, teacher_steps = calls
    assert counts[name] > 0, f"TRL no longer calls {name}: the override does nothing"
    assert 0 < teacher_steps < 4  # the run exercised the teacher's sampling path too (seed 3)


def test_the_installed_trl_has_what_the_seam_relies_on():
    assert trl_seam.problems("onpolicy") == [] and trl_seam.problems("grpo") == []


def test_a_renamed_trl_method_is_refused_at_start_naming_it(monkeypatch, tmp_path):
    import trl

    monkeypatch.delattr(trl.DistillationTrainer, "_compute_loss")
    with pytest.raises(trl_seam.TrlSeamError, match=r"DistillationTrainer\._compute_loss is missing.*tested with TRL 1\.16"):
        trl_seam.check("onpolicy")
    # a signature that moved is named too
    monkeypatch.setattr(trl.DistillationTrainer, "_compute_loss", lambda self, model, batch, n: None, raising=False)
    with pytest.raises(trl_seam.TrlSeamError, match="takes \\(self, model, batch, n\\)"):
        trl_seam.check("onpolicy")


@pytest.mark.slow
def test_distill_onpolicy_refuses_at_start_with_a_clear_message(tmp_path):
    """The CLI on a TRL whose DistillationTrainer lost an overridden method: exit 2 and the message, before any
    weights load (the models named do not even exist)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import trl\ndel trl.DistillationTrainer._generate_single_turn\n")
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "distill", "onpolicy", "--set", "onpolicy.model=/nonexistent/student",
                        "--set", "onpolicy.teacher=/nonexistent/teacher", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "_generate_single_turn is missing" in r.stderr and "tested with TRL 1.16" in r.stderr
