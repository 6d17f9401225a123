from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a hub: everything loads from local files (the subprocesses inherit this).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def teacher():
    """The real hf teacher on the embedded model, loaded once for the session."""
    from distill.config import TeacherConfig
    from distill.teachers.hf import HFTeacher

    return HFTeacher(TeacherConfig(model="embedded", batch_size=8))


def tiny_recipe(**over):
    """A recipe small enough to generate in seconds on two cores."""
    from distill.config import load_recipe

    sets = {
        "problems.task": "arithmetic", "problems.count": 4, "sampling.n": 2, "sampling.max_tokens": 8,
        "prompt.template": "plain", "teacher.batch_size": 8,
    }
    sets.update(over)
    return load_recipe(None, [f"{k}={v}" for k, v in sets.items()])
