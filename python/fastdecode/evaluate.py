"""Perplexity of a text under a model, the measure the quantization tests and
``benchmarks/bench_perplexity.py`` use."""
from __future__ import annotations

import math

import torch

__all__ = ["perplexity"]


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
