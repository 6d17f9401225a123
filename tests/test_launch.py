"""Two processes, as users launch on several GPUs, made to run on CPU (gloo; DeepSpeed with
DS_ACCELERATOR=cpu): DDP (torchrun), and `accelerate launch` with the shipped ZeRO-2 and ZeRO-3
configs. What would break: the run ends; the layout that ran is the one asked for; the saved student
is whole, trained, loads with plain transformers and generates; a LoRA merge equals an offline merge
of its saved adapter (under ZeRO-3 the training model's own shards are empty on every rank) and the
adapter was gathered whole. An FSDP config, which accelerate runs on CPU as plain DDP, is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _cpu_config(name: str, d: Path) -> Path:
    """The shipped accelerate config, on two CPU processes (what differs from a GPU node, and only that)."""
    c = yaml.safe_load((ROOT / "recipes" / "accelerate" / name).read_text())
    c.update(num_processes=2, use_cpu=True, mixed_precision="no")
    if c["distributed_type"] == "MULTI_GPU":
        c["distributed_type"] = "MULTI_CPU"
    c.pop("gpu_ids", None)
    out = d / f"cpu-{name}"
    out.write_text(yaml.safe_dump(c))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.conftest import tiny_llama
    from tests.test_train import _data

    d = tmp_path_factory.mktemp("launch")
    return tiny_llama(d / "student"), _data(d).parent


def _launch(config: Path | None, student: Path, data: Path, out: Path, *sets: str) -> subprocess.CompletedProcess:
    args = ["train.model=" + str(student), "prompt.template=plain", "train.max_length=128",
            "train.per_device_batch_size=2", "train.max_steps=2", "train.save_strategy=no", "train.warmup=0",
            "train.learning_rate=1e-2", *sets]
    import socket

    with socket.socket() as s:  # a free port (port 0 leaves torchrun's static rendezvous waiting)
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    if config is None:  # DDP: accelerate runs a MULTI_CPU config on one machine as one process, torchrun does not
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    else:
        launcher = ["-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", port]
    cmd = [sys.executable, *launcher, "-m", "distill", "train", "--data", str(data), "--out", str(out)]
    for s in args:
        cmd += ["--set", s]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _offline_merge(student: Path, adapter: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    m = PeftModel.from_pretrained(m, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


LAYOUTS = {"ddp.yaml": ("MULTI_CPU", None), "zero2.yaml": ("DEEPSPEED", 2), "zero3.yaml": ("DEEPSPEED", 3)}


@pytest.mark.parametrize("config, lora", [("ddp.yaml", True), ("zero2.yaml", True), ("zero3.yaml", True),
                                          ("zero3.yaml", False)], ids=["ddp-lora", "zero2-lora", "zero3-lora",
                                                                       "zero3-full"])
def test_two_processes_train_and_save_a_student(config, lora, setup, tmp_path):
    if config.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("deepspeed is not installed: `make test` installs it for the ZeRO launches")
        pytest.skip("deepspeed not installed")
    import torch
    from safetensors.torch import load_file

    student, data = setup
    out = tmp_path / "out"
    cfg = None if config == "ddp.yaml" else _cpu_config(config, tmp_path)
    sets = ["train.lora.enabled=true", "train.lora.merge=true", "train.lora.r=4"] if lora else []
    r = _launch(cfg, student, data, out, *sets)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    lay = json.loads((out / "train_summary.json").read_text())["summary"]["layout"]
    kind, stage = LAYOUTS[config]
    assert lay["world_size"] == 2 and lay["distributed_type"] == kind and lay.get("zero_stage") == stage, lay
    assert lay["global_batch"] == 4 and lay["ddp_find_unused_parameters"] is False
    merged, base = load_file(str(out / "model.safetensors")), load_file(str(student / "model.safetensors"))
    assert set(merged) == set(base) and all(merged[k].shape == base[k].shape for k in base), "a partial student"
    assert any(not torch.equal(merged[k], base[k]) for k in base), "the saved student is the untrained one"
    _loads_and_generates(out)
    if not lora:
        return
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all(v.numel() > 0 for v in adapter.values()), "the adapter was saved from empty shards"
    assert max(v.abs().max().item() for k, v in adapter.items() if "lora_B" in k) > 0, "the adapter did not train"
    offline = _offline_merge(student, out / "adapter")
    assert not any("lora" in k for k in merged)
    for k, v in merged.items():
        assert torch.allclose(v, offline[k], atol=1e-6), k
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def _loads_and_generates(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    m = AutoModelForCausalLM.from_pretrained(out)
    ids = tok("What is 2 + 3?", return_tensors="pt")
    assert m.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3


def test_an_fsdp_launch_that_would_run_as_ddp_is_refused(setup, tmp_path):
    """accelerate runs an FSDP config on CPU as plain DDP without a word: distill stops before training."""
    student, data = setup
    out = tmp_path / "out"
    r = _launch(_cpu_config("fsdp2.yaml", tmp_path), student, data, out)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "asks for FSDP (version 2)" in text and "runs this launch as MULTI_CPU" in text and "torchrun" in text
    assert not (out / "model.safetensors").exists()
