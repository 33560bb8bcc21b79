"""How much memory a decode needs, checked before anything big is allocated.

``Transformer.setup_caches`` (every decode of every entry point goes through it) and
``LLM.generate`` (before it builds ``n`` prompt rows) refuse a batch or a length whose KV
cache and per-row working memory would not fit in the memory the device has free, with the
figures, instead of allocating gigabytes and dying in the allocator (or the OOM killer).

The estimate, per row: the KV cache (every layer's keys and values for each position, in
the cache dtype), the logits-sized buffers of one step (logits, the sampler's probabilities,
log-softmax: ``LOGIT_BUFFERS`` x vocab x 4 bytes) and the activations of one prefill chunk
(``model.PREFILL_CHUNK`` positions: the residual stream and attention output, the MLP's
three hidden vectors and the attention scores against the whole cache). The budget is
``MEMORY_FRACTION`` of what the operating system reports available (``MemAvailable`` on
Linux) or what the GPU has free; ``FASTDECODE_MEMORY_LIMIT`` (bytes) overrides it.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

__all__ = ["available_bytes", "decode_bytes", "check_decode_memory", "MEMORY_FRACTION",
           "LOGIT_BUFFERS"]

MEMORY_FRACTION = 0.9   # of the available memory a decode may plan to use
LOGIT_BUFFERS = 6       # logits-sized fp32 buffers alive at once in a step (with slack)


def available_bytes(device: torch.device) -> Optional[int]:
    """Bytes a new allocation on ``device`` may take, or None when unknown."""
    override = os.environ.get("FASTDECODE_MEMORY_LIMIT")
    if override:
        try:
            return int(override)
        except ValueError:
            raise ValueError(f"FASTDECODE_MEMORY_LIMIT must be a number of bytes, got "
                             f"{override!r}") from None
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * MEMORY_FRACTION)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_FRACTION)
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_FRACTION)
    except (ValueError, OSError, AttributeError):
        return None


def kv_bytes_per_position(model) -> int:
    """Bytes of keys and values that one position of one row takes in every layer (in the
    model's ``kv_cache_dtype``)."""
    dtype = getattr(model, "kv_cache_dtype", None) or model.tok_embeddings.activation_dtype
    elt = dtype.itemsize
    return sum(2 * layer.attention.n_local_heads * layer.attention.head_dim * elt
               for layer in model.layers)


def decode_bytes(model, batch: int, positions: int) -> int:
    """Estimated bytes of a decode of ``batch`` rows with a cache of ``positions``."""
    from .model import PREFILL_CHUNK

    c = model.config
    chunk = min(positions, PREFILL_CHUNK)
    activations = chunk * (6 * c.dim + 3 * c.intermediate_size + c.n_head * positions) * 4
    per_row = (positions * kv_bytes_per_position(model) + LOGIT_BUFFERS * c.vocab_size * 4
               + activations)
    return batch * per_row


def check_decode_memory(model, batch: int, positions: int) -> None:
    """ValueError, with the figures, when ``decode_bytes`` exceeds what the model's device
    has available."""
    device = model.tok_embeddings.device
    budget = available_bytes(device)
    if budget is None:
        return
    need = decode_bytes(model, batch, positions)
    if need > budget:
        one = decode_bytes(model, 1, positions)
        raise ValueError(
            f"a decode of {batch} row(s) x {positions} positions needs about "
            f"{need / 2**30:.2f} GiB (KV cache and working memory, {one / 2**20:.1f} MiB a "
            f"row); {budget / 2**30:.2f} GiB is available on {device}: at most "
            f"{max(budget // one, 0)} row(s) of this length fit (lower n / batch size or "
            f"max_tokens)")


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def return_freed_heap() -> None:
    """Give the C heap's free pages back to the operating system (glibc's ``malloc_trim``;
    nothing elsewhere). A loader that builds weights tensor by tensor frees a transient per
    tensor (a repack's row-major copy); glibc keeps such pages in the process, so without
    this the load's resident memory grows by ~10-40 MB of freed heap, differently each run."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
