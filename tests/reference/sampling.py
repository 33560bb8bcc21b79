"""Pure-PyTorch oracles for the sampling ops, written from the seed semantics: gpt-fast's
``logits_to_probs`` (temperature, top-k) and ``multinomial_sample_one_no_sync`` (gpt-fast),
fish-speech's repetition penalty and top-p, plus min-p.

The oracle sorts the vocabulary (the obvious way); the kernels must not. Contract details
that the seeds leave open, fixed here and in docs/sampling.md:
- order: repetition penalty, temperature, top-k, softmax, top-p, min-p, renormalise;
- temperature 0 is greedy: a one-hot distribution at the first argmax;
- top-k of 0/None is off; ties with the k-th value are kept;
- top-p keeps the smallest prefix of the descending probabilities whose sum reaches top_p
  (the crossing token included) and every token tied with its last member;
- the repetition penalty hits each distinct previous id once.
All arithmetic is float64, so the kernels' fp32 rounding is what the tolerances bound.
"""
from typing import Optional

import torch


def _per_row(v, rows):
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.double().expand(rows)]
    return [v] * rows


def logits_to_probs_ref(logits: torch.Tensor, previous_tokens: Optional[torch.Tensor] = None,
                        temperature=1.0, top_k=None, top_p=1.0, min_p=0.0,
                        repetition_penalty=1.0) -> torch.Tensor:
    x = logits.double().reshape(-1, logits.shape[-1]).clone()
    rows, vocab = x.shape
    temps, topks, topps, minps, rps = (_per_row(v, rows) for v in
                                       (temperature, top_k, top_p, min_p, repetition_penalty))
    out = torch.empty_like(x)
    for r in range(rows):
        xr = x[r]
        if previous_tokens is not None and rps[r] != 1.0:
            prev = previous_tokens if previous_tokens.dim() == 1 else previous_tokens[r]
            ids = torch.unique(prev.long())
            s = xr[ids]
            xr[ids] = torch.where(s > 0, s / rps[r], s * rps[r])
        if temps[r] == 0:
            out[r] = 0
            out[r, torch.argmax(xr)] = 1
            continue
        xr = xr / temps[r]
        k = int(topks[r] or 0)
        if k:
            pivot = torch.topk(xr, min(k, vocab)).values[-1]
            xr = torch.where(xr < pivot, -float("inf"), xr)
        p = torch.softmax(xr, dim=-1)
        if topps[r] < 1.0:
            sorted_p = torch.sort(p, descending=True).values
            crossing = int(torch.searchsorted(torch.cumsum(sorted_p, 0),
                                              torch.tensor(topps[r], dtype=torch.float64)))
            tau = sorted_p[min(crossing, vocab - 1)]
            p = torch.where(p < tau, 0.0, p)
        if minps[r] > 0:
            p = torch.where(p < minps[r] * p.max(), 0.0, p)
        out[r] = p / p.sum()
    return out.reshape(logits.shape).to(logits.dtype)


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
