"""Attention for packed training rows, without an L x L mask.

Packing (best-fit decreasing, padding-free) puts several traces in one row, and each trace must
attend only to itself. Given `attn_implementation="sdpa"`, transformers builds a dense
block-diagonal mask from the position ids for every row (32768^2 booleans = 1 GiB per 32k row) and
hands it to SDPA, which then runs a masked kernel over the whole row: on an H100 the cuDNN kernel
spends ~20 ms of host time per call on that mask, and the others attend over all L^2 pairs
(docs/benchmarks.md, "SFT on one H100"). The documents' boundaries are already known: TRL's
padding-free collator passes them as `cu_seq_lens_q` (cumulative lengths), which is all a varlen
kernel needs.

`choose()` picks, in this order, and says which and why:

1. `flash_attention_2` when the `flash-attn` package is installed and a GPU is used: transformers'
   own varlen path, which reads the collator's `cu_seq_lens_*`.
2. `varlen` (registered here with transformers' AttentionInterface), which never builds a mask:
   - on CUDA with torch's built-in varlen flash kernel (`torch.nn.attention.varlen.varlen_attn`,
     torch >= 2.10): one kernel call for all documents of the row;
   - otherwise one `scaled_dot_product_attention(is_causal=True)` call per document: no mask, so
     SDPA picks its flash (GPU) or fused CPU kernel, and the work is sum(l_i^2) instead of L^2.
   Padded batches (packing off) are unpadded first, so no compute goes to padding either.

`varlen` is a training path: a forward with a KV cache (generation) is refused with a message,
since a saved student is reloaded with the default attention anyway (the choice is not written to
its config). GRPO generates with the policy, so it keeps sdpa (or flash_attention_2 when installed).
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass

VARLEN = "varlen"
AUTO = "auto"


@dataclass
class AttentionChoice:
    implementation: str  # what transformers is given
    kernel: str  # what actually runs, for the report
    reason: str


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _torch_varlen():
    """torch's varlen flash-attention entry point and how to ask it for causal attention, or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "window_size" in params:
        causal = {"window_size": (-1, 0)}
    elif "is_causal" in params:
        causal = {"is_causal": True}
    else:
        return None
    return varlen_attn, causal, "enable_gqa" in params


def choose(requested: str | None, device: str, packing: bool, training_only: bool = True) -> AttentionChoice:
    """The attention implementation for a run. `requested` is the recipe's attn_implementation.

    training_only: the model only trains (SFT). GRPO also generates with it, so it never gets `varlen`."""
    req = requested or AUTO
    if req == "flash_attention_2" and not flash_attn_installed():
        raise ImportError("attn_implementation: flash_attention_2 needs the flash-attn package (pip install flash-attn "
                          "--no-build-isolation, on a CUDA machine), or set attn_implementation: auto")
    if req == VARLEN and not training_only:
        raise ValueError("attn_implementation: varlen is for training only (it has no KV cache for generation); "
                         "use auto, sdpa or flash_attention_2 here")
    if req != AUTO:
        register()
        kernel = varlen_kernel(device) if req == VARLEN else req
        why = "as the recipe asks"
        if req == "sdpa" and packing and training_only:
            why += " (packed rows then get a dense block-diagonal mask; auto avoids it)"
        return AttentionChoice(req, kernel, why)
    if device == "cuda" and flash_attn_installed():
        return AttentionChoice("flash_attention_2", "flash-attn varlen", "flash-attn is installed")
    if not training_only:
        return AttentionChoice("sdpa", "sdpa", "the model also generates; flash-attn is not installed")
    register()
    return AttentionChoice(VARLEN, varlen_kernel(device),
                           "no flash-attn package; packed rows need no L x L mask" if packing
                           else "no flash-attn package; padded rows are unpadded")


def inexact_for(config, max_length: int | None = None) -> str | None:
    """What this model's attention does that `varlen` does not implement (it would train on wrong
    logits without a word), or None when varlen is exact for it.

    A sliding window counts only where it bites: layers marked sliding_attention, or a window in use
    (Qwen2's use_sliding_window false turns it off) that is shorter than the rows (max_length): a
    document never longer than the window attends as with full causal attention."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    kind = getattr(c, "model_type", "") or ""
    if getattr(c, "attn_logit_softcapping", None):
        return f"attention logit soft-capping ({kind})"
    if kind.startswith("gpt_oss") or getattr(c, "attention_sinks", None):
        return f"attention sinks ({kind})"
    if getattr(c, "is_causal", True) is False:
        return f"non-causal attention ({kind})"
    window = getattr(c, "sliding_window", None)
    if window and getattr(c, "use_sliding_window", True) is not False:
        sliding_layers = "sliding_attention" in (getattr(c, "layer_types", None) or [])
        if (sliding_layers or getattr(c, "layer_types", None) is None) and (max_length is None or window < max_length):
            return f"a sliding attention window of {window} tokens ({kind})"
    return None


def varlen_kernel(device: str) -> str:
    if device == "cuda" and _torch_varlen() is not None:  # fp16/bf16 on Ampere+; else per-document SDPA
        return "torch varlen_attn (flash)"
    return "sdpa per document (is_causal, no mask)"


# ----------------------------------------------------------------------------------------------
# the registered attention function


def _document_bounds(batch: int, length: int, attention_mask, kwargs, device):
    """(token index of every kept position or None, cu_seqlens int32, longest document)."""
    import torch

    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None and batch == 1:
        longest = kwargs.get("max_length_q")
        if longest is None:
            longest = int((cu[1:] - cu[:-1]).max())
        return None, cu.to(torch.int32), int(longest)
    if attention_mask is not None:  # padded rows: (batch, length) booleans, True on real tokens
        keep = attention_mask.reshape(-1).bool()
        lengths = attention_mask.reshape(batch, length).sum(-1, dtype=torch.int32)
        cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return keep.nonzero().squeeze(-1), cu, int(lengths.max())
    pos = kwargs.get("position_ids")
    if pos is not None and batch == 1:  # packed without the collator's cu_seq_lens: documents restart at 0
        starts = (pos.reshape(-1) == 0).nonzero().squeeze(-1).to(torch.int32)
        if starts.numel() == 0 or int(starts[0]) != 0:
            starts = torch.cat([starts.new_zeros(1), starts])
        cu = torch.cat([starts, starts.new_tensor([length])])
        return None, cu, int((cu[1:] - cu[:-1]).max())
    return None, torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=device), length


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None, **kwargs):
    """transformers attention interface: query (B, H, L, D), key/value (B, Hkv, L, D) -> (B, L, H, D), None."""

    b, h, length, d = query.shape
    hkv = key.shape[1]
    if key.shape[2] != length:
        raise NotImplementedError("attn_implementation varlen is a training path and has no KV cache: load the "
                                  "model with attn_implementation='sdpa' (the default) to generate")
    # what the other implementations do and this one does not: refuse rather than compute other logits
    if kwargs.get("softcap") is not None or getattr(module, "sinks", None) is not None \
            or getattr(module, "is_causal", True) is False:
        raise NotImplementedError("attn_implementation varlen implements causal attention without soft-capping "
                                  "or sinks; this model uses one of them: set attn_implementation: sdpa")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("attn_implementation varlen takes a 2D padding mask or none; got a "
                         f"{attention_mask.dim()}D mask")
    keep, cu, longest = _document_bounds(b, length, attention_mask, kwargs, query.device)
    cu = cu.to(query.device)
    # (B, H, L, D) -> (B*L, H, D): one row of tokens, documents back to back
    q = query.transpose(1, 2).reshape(b * length, h, d)
    k = key.transpose(1, 2).reshape(b * length, hkv, d)
    v = value.transpose(1, 2).reshape(b * length, hkv, d)
    if keep is not None:
        q, k, v = q[keep], k[keep], v[keep]
    window = sliding_window if (sliding_window and sliding_window < longest) else None
    fused = _torch_varlen() if _flash_capable(query) else None
    if fused is not None and window is None and dropout == 0.0:
        fn, causal, gqa = fused
        extra = {"scale": scaling} if "scale" in inspect.signature(fn).parameters else {}
        if hkv != h and gqa:
            extra["enable_gqa"] = True
        elif hkv != h:
            k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        out = fn(q, k, v, cu, cu, longest, longest, **causal, **extra)
    else:
        out = _sdpa_per_document(q, k, v, cu.tolist(), scaling, dropout if module.training else 0.0, window)
    if keep is not None:
        full = out.new_zeros(b * length, h, d)
        full[keep] = out
        out = full
    return out.reshape(b, length, h, d), None


def _flash_capable(query) -> bool:
    """torch's varlen flash kernel takes fp16/bf16 on Ampere or newer; float32 recipes and older GPUs
    take the per-document SDPA path, which is exact for them."""
    import torch

    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(query.device)[0] >= 8)


def _sdpa_per_document(q, k, v, cu: list[int], scale, dropout: float, window: int | None):
    """(T, H, D) -> (T, H, D): causal SDPA on each document alone. No mask means SDPA's fused kernels."""
    import torch
    import torch.nn.functional as F

    gqa = k.shape[1] != q.shape[1]
    outs = []
    for s, e in zip(cu[:-1], cu[1:], strict=True):
        if e == s:
            continue
        qi, ki, vi = (x[s:e].transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, H, l, D)
        if window is not None and e - s > window:
            i = torch.arange(e - s, device=q.device)
            mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
            o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, dropout_p=dropout, scale=scale,
                                               enable_gqa=gqa)
        else:
            o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, dropout_p=dropout, scale=scale,
                                               enable_gqa=gqa)
        outs.append(o.squeeze(0).transpose(0, 1))
    return torch.cat(outs) if outs else q.new_zeros(q.shape)


_REGISTERED = False


def register() -> None:
    """Make `attn_implementation="varlen"` known to transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    # flash_attention_mask: None when every token is real (packed rows), else the 2D padding mask; never L x L.
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)
    _REGISTERED = True
