"""Perplexity of a text under a model, the measure the quantization tests and
``benchmarks/bench_perplexity.py`` use."""
from __future__ import annotations

import math

import torch

__all__ = ["perplexity", "perplexity_windows"]


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, chunk: int = 0) -> float:
    """exp(mean next-token cross entropy) of ``ids`` ``[T]`` (or ``[1, T]``).

    chunk: 0 runs the whole text in one forward pass (with the quantized linears: their GEMM
    path); ``n`` feeds it ``n`` positions at a time through the KV cache, and up to 16
    positions take the GEMV kernels that decoding uses.
    """
    ids = ids.reshape(1, -1)
    n = ids.shape[1]
    if n < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {n}")
    if chunk < 0:
        raise ValueError(f"chunk must be >= 0, got {chunk}")
    step = chunk or n
    model.setup_caches(1, n)
    logits = torch.cat([model(ids[:, s:s + step], torch.arange(s, min(n, s + step)))
                        for s in range(0, n, step)], dim=1)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
    return math.exp(float(nll))


@torch.no_grad()
def perplexity_windows(model, ids: torch.Tensor, n_ctx: int, chunk: int = 0) -> tuple:
    """``llama-perplexity``'s measure, for a side-by-side figure: ``ids [T]`` cut into
    ``T // n_ctx`` windows of ``n_ctx`` tokens, each decoded from an empty cache, and only
    the second half of each window scored (the next-token cross entropy of positions
    ``n_ctx // 2 .. n_ctx - 2``, so every scored token has at least ``n_ctx / 2`` of
    context). Returns ``(perplexity, windows)``. chunk: as in ``perplexity``.
    """
    ids = ids.reshape(-1)
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise ValueError(f"n_ctx must be an int >= 4, got {n_ctx!r}")
    windows = ids.numel() // n_ctx
    if windows < 1:
        raise ValueError(f"ids holds {ids.numel()} tokens, fewer than one window of n_ctx = "
                         f"{n_ctx}")
    if chunk < 0:
        raise ValueError(f"chunk must be >= 0, got {chunk}")
    first, step = n_ctx // 2, chunk or n_ctx
    total, count = 0.0, 0
    model.setup_caches(1, n_ctx)
    for w in range(windows):
        window = ids[w * n_ctx:(w + 1) * n_ctx].reshape(1, -1)
        logits = torch.cat([model(window[:, s:s + step], torch.arange(s, min(n_ctx, s + step)))
                            for s in range(0, n_ctx, step)], dim=1)
        scored = logits[0, first:n_ctx - 1].float()
        total += float(torch.nn.functional.cross_entropy(scored, window[0, first + 1:],
                                                         reduction="sum"))
        count += n_ctx - 1 - first
    return math.exp(total / count), windows
