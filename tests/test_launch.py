"""Two processes, as users launch on several GPUs, made to run on CPU (gloo; DeepSpeed with
DS_ACCELERATOR=cpu): DDP (torchrun), and `accelerate launch` with the shipped ZeRO-2 and ZeRO-3
configs, for SFT (full and LoRA merged), GRPO, a killed run's resume, and Ulysses sequence
parallelism. What would break: the run ends; the layout that ran is the one asked for; the saved
student is whole, trained, loads with plain transformers and generates; its weights equal those of
one process trained on the same global batch over the same whole epoch (so each example was seen
once: two ranks that both saw every example, or half of them, train other weights); a LoRA merge
equals an offline merge of its saved adapter (under ZeRO-3 the training model's own shards are empty
on every rank); no rank but the main one writes a file that is not its own shard. An FSDP config,
which accelerate runs on CPU as plain DDP, is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _cpu_config(name: str, d: Path, nproc: int = 2) -> Path:
    """The shipped accelerate config, on CPU processes (what differs from a GPU node, and only that)."""
    c = yaml.safe_load((ROOT / "recipes" / "accelerate" / name).read_text())
    c.update(num_processes=nproc, use_cpu=True, mixed_precision="no")
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


# Every launch trains a whole epoch of 24 examples, unpacked, 2 rows a process: 6 optimizer steps of 4.
COMMON = ["prompt.template=plain", "train.max_length=128", "train.packing=false", "train.epochs=1",
          "train.per_device_batch_size=2", "train.save_strategy=no", "train.warmup=0", "train.learning_rate=1e-2",
          "train.logging_steps=1"]

# Writes every process makes under the run's directory, seen from inside it (an audit hook on open(), plus
# safetensors' and torch.save's native writers), so a file saved by both ranks is caught.
AUDIT = """
import os, sys
_out, _log = os.environ.get("DISTILL_AUDIT_OUT"), os.environ.get("DISTILL_AUDIT_LOG")
if _out and _log:
    _rank = os.environ.get("RANK", "launcher")
    _f = open(f"{_log}.{os.getpid()}", "a", buffering=1)
    _patched = set()

    def _note(path):
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return
        if p.startswith(_out):
            _f.write(f"{_rank}\\t{p}\\n")

    def _patch():
        st, ser = sys.modules.get("safetensors.torch"), sys.modules.get("torch.serialization")
        # only modules done importing (the hook also fires while they are half-initialized)
        if st is not None and "st" not in _patched and hasattr(st, "save_file"):
            _patched.add("st")
            real = st.serialize_file
            st.serialize_file = lambda t, filename, *a, **k: (_note(filename), real(t, filename, *a, **k))[1]
        if ser is not None and "ser" not in _patched and hasattr(ser, "save"):
            _patched.add("ser")
            real_w = ser._open_zipfile_writer
            ser._open_zipfile_writer = lambda f, *a, **k: (_note(f) if isinstance(f, (str, os.PathLike)) else None,
                                                           real_w(f, *a, **k))[1]

    def _hook(event, args):
        if event == "open" and args[2] is not None and args[2] & (os.O_WRONLY | os.O_RDWR) \\
                and isinstance(args[0], (str, bytes, os.PathLike)):
            _note(args[0])
        elif event in ("os.rename", "os.replace"):
            _note(args[1])
        if event in ("open", "import") and len(_patched) < 2:
            _patch()

    sys.addaudithook(_hook)
"""


def _free_port() -> str:
    import socket

    with socket.socket() as s:  # a free port (port 0 leaves torchrun's static rendezvous waiting)
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _command(config: Path | None, stage: list[str], sets: list[str], nproc: int = 2) -> list[str]:
    if nproc == 1:
        launcher = []
    elif config is None:  # DDP: accelerate runs a MULTI_CPU config on one machine as one process, torchrun does not
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", _free_port()]
    else:
        launcher = ["-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
                    _free_port()]
    cmd = [sys.executable, *launcher, "-m", "distill", *stage]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _env(out: Path) -> dict:
    audit = out.parent / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    path = os.pathsep.join([str(audit), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
            "DISTILL_AUDIT_OUT": str(out.resolve()), "DISTILL_AUDIT_LOG": str(audit / "writes")}


def _run(cmd: list[str], out: Path, timeout: int) -> subprocess.CompletedProcess:
    """A launch. A DeepSpeed launch on CPU (its shared-memory allreduce, deepspeed_shm_comm_op, exists only on
    CPU; GPUs use NCCL) now and then dies of SIGABRT: twice in this project's CI runs (a ZeRO-3 on-policy and a
    ZeRO-3 SFT launch), never in 4 back-to-back local runs of the same launch. Such a launch is run once more
    from scratch, its first output kept beside `out` (sigabrt-first-attempt.txt) for diagnosis. Any other
    failure, or a second abort, fails the test."""
    r = subprocess.run(cmd, cwd=ROOT, env=_env(out), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 and "Signal 6 (SIGABRT)" in r.stderr and "deepspeed_shm_comm_op" in r.stdout + r.stderr:
        import shutil

        (out.parent / "sigabrt-first-attempt.txt").write_text(r.stdout + "\n=====\n" + r.stderr)
        shutil.rmtree(out, ignore_errors=True)
        for log in (out.parent / "audit").glob("writes.*"):
            log.unlink()
        r = subprocess.run(cmd, cwd=ROOT, env=_env(out), capture_output=True, text=True, timeout=timeout)
    return r


def _launch(config: Path | None, student: Path, data: Path, out: Path, *sets: str,
            nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = _command(config, ["train", "--data", str(data), "--out", str(out)],
                   ["train.model=" + str(student), *COMMON, *sets], nproc)
    return _run(cmd, out, 900)


def _writes(out: Path) -> dict[str, set[str]]:
    """{rank: files written under out} from the audit logs of the last launch into out."""
    seen: dict[str, set[str]] = {}
    for log in (out.parent / "audit").glob("writes.*"):
        for line in log.read_text().splitlines():
            rank, path = line.split("\t", 1)
            seen.setdefault(rank, set()).add(os.path.relpath(path, out))
    return seen


def _written_once_by_the_main_process(out: Path) -> None:
    seen = _writes(out)
    assert "model.safetensors" in seen.get("0", set()) or "adapter_model.safetensors" in seen.get("0", set()), seen
    for rank, files in seen.items():
        if rank == "0":
            continue
        # a rank's own shards and RNG state are its to write; nothing else is
        theirs = {f for f in files if re.search(rf"(rank_{rank}_|rng_state_{rank}\.pth$)", os.path.basename(f))}
        assert files == theirs, f"rank {rank} wrote {sorted(files - theirs)}"


def _rel(a: dict, b: dict, base: dict) -> float:
    """||a - b|| / ||b - base||: how far two trainings from the same base end apart, against how far they moved."""
    import torch

    num = torch.sqrt(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in base))
    den = torch.sqrt(sum(((b[k].float() - base[k].float()) ** 2).sum() for k in base))
    return float(num / den)


_REFERENCE: dict[str, dict] = {}
_REFERENCE_SETS = {"full": ["train.gradient_accumulation_steps=2"],  # 2 rows x 2 accumulation = 4, as 2 x 2 ranks
                   "lora": ["train.gradient_accumulation_steps=2"],
                   "half": []}  # 2 rows a step


def _reference(setup, tmp_dir: Path, kind: str) -> dict:
    """The weights of one process trained on the same global batch over the same epoch (computed once)."""
    return _reference_run(setup, tmp_dir, kind)[0]


def _reference_run(setup, tmp_dir: Path, kind: str) -> tuple[dict, list[dict]]:
    """(weights, training log) of the one-process reference run."""
    from safetensors.torch import load_file

    if kind not in _REFERENCE:
        student, data = setup
        out = tmp_dir / f"reference-{kind}"
        r = _launch(None, student, data, out, *_REFERENCE_SETS[kind], *(_LORA if kind == "lora" else []), nproc=1)
        assert r.returncode == 0, r.stderr[-3000:]
        log = json.loads((out / "train_summary.json").read_text())["log"]
        _REFERENCE[kind] = (load_file(str(out / "model.safetensors")), log)
    return _REFERENCE[kind]


# dropout off: its masks come from each process's RNG, which differs between one process and two
_LORA = ["train.lora.enabled=true", "train.lora.merge=true", "train.lora.r=4", "train.lora.dropout=0"]


def _offline_merge(student: Path, adapter: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    m = PeftModel.from_pretrained(m, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


LAYOUTS = {"ddp.yaml": ("MULTI_CPU", None), "zero2.yaml": ("DEEPSPEED", 2), "zero3.yaml": ("DEEPSPEED", 3)}
# How far a two-process run may end from the one-process reference, relative to how far training moved the
# weights. DDP all-reduces the same two micro-batch gradients that accumulation adds: measured 0. DeepSpeed
# averages in its own order and, under ZeRO-3, gathers each layer's weights for every micro-batch; a run that
# saw other examples (each rank the whole set, or half of it) ends ~0.5 away.
TOLERANCE = {"ddp.yaml": 1e-6, "zero2.yaml": 1e-4, "zero3.yaml": 1e-4}


def _needs_deepspeed(config: str) -> None:
    if config.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("deepspeed is not installed: `make test` installs it for the ZeRO launches")
        pytest.skip("deepspeed not installed")


# DDP full fine-tuning: test_a_killed_two_process_run_resumes_from_its_last_whole_checkpoint (the same checks)
@pytest.mark.parametrize("config, lora", [("ddp.yaml", True), ("zero2.yaml", False), ("zero2.yaml", True),
                                          ("zero3.yaml", False), ("zero3.yaml", True)],
                         ids=["ddp-lora", "zero2-full", "zero2-lora", "zero3-full", "zero3-lora"])
def test_two_processes_train_and_save_a_student(config, lora, setup, tmp_path, tmp_path_factory):
    _needs_deepspeed(config)
    import torch
    from safetensors.torch import load_file

    student, data = setup
    out = tmp_path / "out"
    cfg = None if config == "ddp.yaml" else _cpu_config(config, tmp_path)
    r = _launch(cfg, student, data, out, *(_LORA if lora else []))
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    summary = json.loads((out / "train_summary.json").read_text())["summary"]
    lay = summary["layout"]
    kind, stage = LAYOUTS[config]
    assert lay["world_size"] == 2 and lay["distributed_type"] == kind and lay.get("zero_stage") == stage, lay
    assert lay["global_batch"] == 4 and lay["ddp_find_unused_parameters"] is False and lay["sequence_parallel"] == 1
    assert summary["steps"] == 6 and summary["epochs"] == 1.0  # 24 examples / 4 a step
    merged, base = load_file(str(out / "model.safetensors")), load_file(str(student / "model.safetensors"))
    assert set(merged) == set(base) and all(merged[k].shape == base[k].shape for k in base), "a partial student"
    assert any(not torch.equal(merged[k], base[k]) for k in base), "the saved student is the untrained one"
    _loads_and_generates(out)
    _written_once_by_the_main_process(out)
    ref = _reference(setup, tmp_path_factory.getbasetemp(), "lora" if lora else "full")
    assert _rel(merged, ref, base) <= TOLERANCE[config], f"{_rel(merged, ref, base):.2e} from one process"
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


def test_one_process_on_half_the_global_batch_is_told_apart(setup, tmp_path_factory):
    """The tolerance above means something: the same epoch in batches of 2 ends far from batches of 4."""
    from safetensors.torch import load_file

    student, _ = setup
    base = load_file(str(student / "model.safetensors"))
    tmp = tmp_path_factory.getbasetemp()
    assert _rel(_reference(setup, tmp, "half"), _reference(setup, tmp, "full"), base) > 0.05


def test_a_killed_two_process_run_resumes_from_its_last_whole_checkpoint(setup, tmp_path, tmp_path_factory):
    """DDP full fine-tuning, killed (SIGKILL to both ranks) once a checkpoint is whole: the same command again
    ends where one process on the same global batch ends, and saves like the other layouts."""
    from safetensors.torch import load_file

    student, data = setup
    out = tmp_path / "out"
    sets = ["train.model=" + str(student), *COMMON, "train.save_strategy=steps", "train.save_steps=1",
            "train.save_total_limit=10"]
    cmd = _command(None, ["train", "--data", str(data), "--out", str(out)], sets)
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    assert not (out / "model.safetensors").exists(), "the run ended before it was killed"
    steps = sorted(int(c.name.split("-")[1]) for c in out.glob("checkpoint-*"))
    assert steps and max(steps) < 6
    # a checkpoint the kill left half-written (no trainer_state.json, which is written last) is skipped
    torn = out / f"checkpoint-{max(steps) + 1}"
    torn.mkdir(exist_ok=True)
    r = subprocess.run(cmd, cwd=ROOT, env=_env(out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"skipping {torn}" in r.stderr
    summary = json.loads((out / "train_summary.json").read_text())["summary"]
    resumed = summary["resumed_from"]
    assert resumed and 2 <= int(resumed.rsplit("-", 1)[1]) <= max(steps) and summary["steps"] == 6
    assert "global batch 4 traces = 2 a device x 1 accumulation x 2 data-parallel" in r.stderr
    lay = summary["layout"]
    assert lay["world_size"] == 2 and lay["distributed_type"] == "MULTI_CPU" and lay["global_batch"] == 4, lay
    base = load_file(str(student / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    assert set(final) == set(base)
    assert _rel(final, _reference(setup, tmp_path_factory.getbasetemp(), "full"), base) <= TOLERANCE["ddp.yaml"]
    _loads_and_generates(out)
    _written_once_by_the_main_process(out)


def _grad_norms(log: list[dict]) -> list[float]:
    return [x["grad_norm"] for x in log if "grad_norm" in x]


# The rows a step of SP 2 x DP 2 trains in file order: accelerate deals 2-row batches to the 4 ranks in turn, and
# DeepSpeed's Ulysses loader has each SP group train its ranks' batches one step after the other, so the first step
# is the batches of ranks 0 and 2 (rows 0, 1, 4, 5), the second those of ranks 1 and 3.
SP_ORDER = [8 * k + j for k in range(3) for j in (0, 1, 4, 5, 2, 3, 6, 7)]


def _sp_reference(setup, tmp_dir: Path) -> tuple[dict, list[dict]]:
    """One process, 2 rows x 2 accumulation, the file in the order SP 2 x DP 2 trains it (computed once)."""
    from safetensors.torch import load_file

    if "sp" not in _REFERENCE:
        student, data = setup
        lines = (data / "train.jsonl").read_text().splitlines()
        d = tmp_dir / "reference-sp-data"
        d.mkdir()
        (d / "train.jsonl").write_text("\n".join(lines[i] for i in SP_ORDER) + "\n")
        out = tmp_dir / "reference-sp"
        r = _launch(None, student, d, out, "train.gradient_accumulation_steps=2", "train.sampling=sequential", nproc=1)
        assert r.returncode == 0, r.stderr[-3000:]
        log = json.loads((out / "train_summary.json").read_text())["log"]
        _REFERENCE["sp"] = (load_file(str(out / "model.safetensors")), log)
    return _REFERENCE["sp"]


@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"], ids=["zero2", "zero3"])
def test_sequence_parallel_two_by_two_matches_one_process(config, setup, tmp_path, tmp_path_factory):
    """Ulysses SP 2 x DP 2 on four processes, in the two ZeRO layouts the preflight accepts: each rank holds half
    of its group's rows (and half the heads after the all-to-all), the two groups train different rows, and a
    step is 4 rows, as one process with 2 rows x 2 accumulation on the same rows. Every step's pre-clip gradient
    norm and logged loss must be that process's within 1%, and the weights after the epoch within the ZeRO
    tolerance. (transformers 5.19's own SP loss back-propagates the group's loss on every rank, which DeepSpeed's
    ZeRO-1/2 averaging leaves 2x too large here, and its differentiable all-gather over an SP subgroup fails on
    gloo: distill/train/ulysses.py.)"""
    _needs_deepspeed(config)
    from safetensors.torch import load_file

    student, data = setup
    out = tmp_path / "out"
    r = _launch(_cpu_config(config, tmp_path, nproc=4), student, data, out, "train.sequence_parallel=2",
                "train.sampling=sequential")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    summary = json.loads((out / "train_summary.json").read_text())
    lay = summary["summary"]["layout"]
    assert lay["world_size"] == 4 and lay["zero_stage"] == LAYOUTS[config][1], lay
    assert lay["sequence_parallel"] == 2 and lay["data_parallel"] == 2 and lay["global_batch"] == 4, lay
    speed = summary["summary"]["speed"]
    assert speed["attn_implementation"] == "sdpa" and "over 2 ranks" in speed["attention_reason"]
    assert summary["summary"]["steps"] == 6
    ref_weights, ref_log = _sp_reference(setup, tmp_path_factory.getbasetemp())
    got, want = _grad_norms(summary["log"]), _grad_norms(ref_log)
    assert len(got) == len(want) == 6
    assert all(abs(g / w - 1) < 0.01 for g, w in zip(got, want, strict=True)), (got, want)
    losses = [x["loss"] for x in summary["log"] if "loss" in x]
    ref_losses = [x["loss"] for x in ref_log if "loss" in x]
    assert all(abs(a / b - 1) < 0.01 for a, b in zip(losses, ref_losses, strict=True)), (losses, ref_losses)
    base = load_file(str(student / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    assert _rel(final, ref_weights, base) <= TOLERANCE[config], f"{_rel(final, ref_weights, base):.2e} from one process"
    _loads_and_generates(out)
    _written_once_by_the_main_process(out)


def test_sequence_parallel_under_zero3_without_reduce_scatter_is_refused_before_weights_load(setup, tmp_path):
    """ZeRO-3 with reduce_scatter: false averages some buckets over the data-parallel groups and others over every
    rank: no loss scale is right, so the launch stops in the preflight, naming the setting and the fix."""
    _needs_deepspeed("zero3.yaml")
    student, data = setup
    ds = {"zero_optimization": {"stage": 3, "reduce_scatter": False}, "train_micro_batch_size_per_gpu": "auto",
          "gradient_accumulation_steps": "auto", "train_batch_size": "auto", "gradient_clipping": "auto"}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    c = yaml.safe_load(_cpu_config("zero3.yaml", tmp_path, nproc=4).read_text())
    c["deepspeed_config"] = {"deepspeed_config_file": str(tmp_path / "ds.json"), "zero3_init_flag": True}
    cfg = tmp_path / "cpu-zero3-no-rs.yaml"
    cfg.write_text(yaml.safe_dump(c))
    out = tmp_path / "out"
    r = _launch(cfg, student, data, out, "train.sequence_parallel=2")
    assert r.returncode != 0
    assert "reduce_scatter: false" in r.stderr and "zero2.yaml" in r.stderr, r.stderr[-3000:]
    assert "Loading weights" not in r.stderr and not (out / "model.safetensors").exists()


@pytest.mark.parametrize("config", ["ddp.yaml", "zero2.yaml", "zero3.yaml"], ids=["ddp", "zero2", "zero3"])
def test_grpo_on_two_processes(config, setup, tmp_path):
    """GRPO with the global batch split over two ranks (2 problems x 4 completions, 4 a rank), KL to the
    frozen reference on: it ends, records its layout, and saves a policy that loads and generates. Its
    weights are not compared with one process: each rank samples its own completions."""
    _needs_deepspeed(config)
    import torch
    from safetensors.torch import load_file

    student, _ = setup
    out = tmp_path / "out"
    sets = ["grpo.model=" + str(student), "problems.task=arithmetic", "problems.count=4", "prompt.template=plain",
            "grpo.num_generations=4", "grpo.per_device_batch_size=4", "grpo.max_completion_length=8",
            "grpo.max_steps=2", "grpo.learning_rate=1e-2", "grpo.save_strategy=no", "grpo.reward_workers=1",
            "grpo.beta=0.01", "grpo.logging_steps=1",
            # the random policy never answers right; the language share varies, so advantages are not all 0
            "grpo.rewards={accuracy: 1.0, format: 1.0, language: 1.0}"]
    cfg = None if config == "ddp.yaml" else _cpu_config(config, tmp_path)
    r = _run(_command(cfg, ["grpo", "--out", str(out)], sets), out, 600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    d = json.loads((out / "grpo_summary.json").read_text())
    kind, stage = LAYOUTS[config]
    lay = d["layout"]
    assert lay["world_size"] == 2 and lay["distributed_type"] == kind and lay.get("zero_stage") == stage, lay
    assert d["summary"]["steps"] == 2 and d["summary"]["completions"] == 16
    assert all("kl" in x for x in d["log"] if "reward" in x)
    base = load_file(str(student / "model.safetensors"))
    policy = load_file(str(out / "model.safetensors"))
    assert set(policy) == set(base) and any(not torch.equal(policy[k], base[k]) for k in base)
    _loads_and_generates(out)
    _written_once_by_the_main_process(out)


@pytest.mark.parametrize("config", ["ddp.yaml", "zero3.yaml"], ids=["ddp", "zero3"])
def test_onpolicy_on_two_processes(config, setup, tmp_path):
    """On-policy distillation with the batch split over two ranks (4 prompts, 2 a rank) and, under ZeRO-3, the
    teacher sharded too: it ends, records the layout asked for, logs the reverse KL and the verifier's scores
    gathered over both ranks, and saves a trained student that loads and generates, written by rank 0 only. Under
    ZeRO-3 beta is 0.5, so the reverse KL is recomputed from the LM heads that ZeRO-3 partitions, and lmbda is 0.5,
    so the sharded teacher also samples a step through TRL's generation path (parameters gathered on both ranks)."""
    _needs_deepspeed(config)
    import torch
    from safetensors.torch import load_file

    from tests.conftest import tiny_llama

    student, _ = setup
    teacher = tiny_llama(tmp_path / "teacher", seed=1)
    out = tmp_path / "out"
    sets = ["onpolicy.model=" + str(student), "onpolicy.teacher=" + str(teacher), "problems.task=arithmetic",
            "problems.count=8", "prompt.template=plain", "onpolicy.per_device_batch_size=2",
            "onpolicy.max_completion_length=8", "onpolicy.max_steps=2", "onpolicy.learning_rate=1e-2",
            "onpolicy.save_strategy=no", "onpolicy.reward_workers=0", "onpolicy.gradient_checkpointing=false",
            f"onpolicy.beta={1.0 if config == 'ddp.yaml' else 0.5}"]
    if config == "zero3.yaml":  # seed 0, lmbda 0.5: the teacher samples step 0 (gathered from ZeRO-3 shards), the student step 1
        sets += ["onpolicy.lmbda=0.5", "onpolicy.seed=0"]
    cfg = None if config == "ddp.yaml" else _cpu_config(config, tmp_path)
    r = _run(_command(cfg, ["onpolicy", "--out", str(out)], sets), out, 600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    d = json.loads((out / "train_summary.json").read_text())
    kind, stage = LAYOUTS[config]
    lay = d["layout"]
    assert lay["world_size"] == 2 and lay["distributed_type"] == kind and lay.get("zero_stage") == stage, lay
    assert d["summary"]["steps"] == 2 and d["summary"]["completions"] == 8
    steps = [x for x in d["log"] if "loss" in x]
    if config == "zero3.yaml":
        assert [x["teacher_sampled"] for x in steps] == [1.0, 0.0]
        assert steps[0]["teacher_samples/reverse_kl"] > 0 and steps[0].get("reverse_kl") is None
        assert d["summary"]["teacher_share"] > 0 and d["summary"]["flops"]["teacher generation"] > 0
        steps = steps[1:]
    assert steps and all(x["reverse_kl"] > 0 and "verifier/accuracy" in x for x in steps)
    if config != "ddp.yaml":  # JSD(0.5) <= ln 2, and below the reverse KL of two random models
        assert all(0 < x["loss"] < 0.7 and x["reverse_kl"] > x["loss"] for x in steps)
    base = load_file(str(student / "model.safetensors"))
    trained = load_file(str(out / "model.safetensors"))
    assert set(trained) == set(base) and any(not torch.equal(trained[k], base[k]) for k in base)
    _loads_and_generates(out)
    _written_once_by_the_main_process(out)


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
