"""Pure-PyTorch oracles for the sampling ops, written from the seed semantics (gpt-fast's
``logits_to_probs`` / ``multinomial_sample_one_no_sync``, seed 004).

Differences from gpt-fast that are part of our contract: temperature 0 means greedy (a
one-hot distribution at the first argmax) instead of dividing by 1e-5; top_k of 0 or None
means no filter.
"""
from typing import Optional

import torch


def logits_to_probs_ref(logits: torch.Tensor, temperature: float = 1.0,
                        top_k: Optional[int] = None) -> torch.Tensor:
    # float64 throughout: the oracle is the exact value, so the kernels' fp32 rounding (and
    # not the oracle's) is what the tolerance table bounds.
    x = logits.double()
    if temperature == 0:
        idx = torch.argmax(x, dim=-1, keepdim=True)
        return torch.zeros_like(x).scatter_(-1, idx, 1.0).to(logits.dtype)
    x = x / temperature
    if top_k:
        v, _ = torch.topk(x, min(top_k, x.size(-1)))
        pivot = v.select(-1, -1).unsqueeze(-1)
        x = torch.where(x < pivot, -float("inf"), x)
    return torch.softmax(x, dim=-1).to(logits.dtype)


def multinomial_sample_one_no_sync_ref(probs: torch.Tensor,
                                       generator: Optional[torch.Generator] = None
                                       ) -> torch.Tensor:
    q = torch.empty_like(probs, dtype=torch.float32).exponential_(1, generator=generator)
    return torch.argmax(probs.float() / q, dim=-1, keepdim=True).to(dtype=torch.int)


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None):
    """float64 matmul: the exact value the fp32 kernels are compared against."""
    y = x.double() @ weight.double().t()
    if bias is not None:
        y = y + bias.double()
    return y
