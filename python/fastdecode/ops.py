"""Typed wrappers over ``torch.ops.fastdecode.*``, each with its fake (meta) kernel beside it.

The fake kernels give output shapes and dtypes without computing anything, which is what
``torch.compile(fullgraph=True)`` and ``torch.library.opcheck`` need to trace through the ops.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _C  # noqa: F401  (registers torch.ops.fastdecode)

__all__ = ["logits_to_probs", "multinomial_sample_one_no_sync", "linear"]

_ops = torch.ops.fastdecode


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0,
                    top_k: Optional[int] = None) -> torch.Tensor:
    """Probabilities from logits, gpt-fast semantics, one fused C++ pass per row.

    logits: ``[V]`` or ``[B, V]``, float32 / bfloat16 / float16, CPU.
    temperature: ``>= 0``; ``0`` gives a one-hot distribution at the argmax (greedy).
    top_k: ``None`` or ``0`` keeps every token; ``k >= 1`` keeps the tokens whose logit is at
    least the k-th largest (ties at the k-th value are kept); ``k >= V`` keeps every token.
    Returns probabilities with the shape and dtype of ``logits``.
    """
    return _ops.logits_to_probs(logits, float(temperature), top_k)


@torch.library.register_fake("fastdecode::logits_to_probs")
def _logits_to_probs_fake(logits, temperature=1.0, top_k=None):
    return torch.empty_like(logits)


def multinomial_sample_one_no_sync(probs: torch.Tensor,
                                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw per row from ``probs`` without a host synchronisation.

    probs: ``[V]`` or ``[B, V]`` non-negative weights (need not sum to 1).
    Returns int32 indices of shape ``[1]`` or ``[B, 1]``: ``argmax(probs / E)`` with
    ``E ~ Exp(1)`` drawn from ``generator`` (the default CPU generator when ``None``).
    """
    return _ops.multinomial_sample_one_no_sync(probs, generator)


@torch.library.register_fake("fastdecode::multinomial_sample_one_no_sync")
def _multinomial_fake(probs, generator=None):
    return probs.new_empty((*probs.shape[:-1], 1), dtype=torch.int32)


def linear(x: torch.Tensor, weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` for decode: x ``[..., K]``, weight ``[N, K]``, bias ``[N]`` -> ``[..., N]``.

    fp32 inputs of at most 8 rows use a C++ GEMV that streams each weight row once with all
    cores (decode is memory bound); other inputs go to ATen's GEMM.
    """
    return _ops.linear(x, weight, bias)


@torch.library.register_fake("fastdecode::linear")
def _linear_fake(x, weight, bias=None):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
