"""Sampling API (gpt-fast / fish-speech names) on top of the C++ ops in ``ops.py``.

``sample`` works on the logits of the last position and returns ``(idx [B, 1], probs [B, V])``.
Every knob is checked here, in Python, before any model or kernel work is done, so that a
bad request fails fast with the argument's name and its allowed range.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch

from . import ops

__all__ = ["SAMPLING_KWARGS", "validate_sampling_kwargs", "logits_to_probs",
           "multinomial_sample_one_no_sync", "sample"]

# Knob -> default. Anything else passed as **sampling_kwargs is rejected by name.
SAMPLING_KWARGS: Dict[str, Any] = {"temperature": 1.0, "top_k": None, "generator": None}


def validate_sampling_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Check names and ranges of sampling knobs; return them with defaults filled in.

    Raises ``TypeError`` for an unknown knob and ``ValueError`` for a value out of range.
    """
    unknown = sorted(set(kwargs) - set(SAMPLING_KWARGS))
    if unknown:
        raise TypeError(f"unknown sampling argument(s) {unknown}; "
                        f"supported: {sorted(SAMPLING_KWARGS)}")
    out = {**SAMPLING_KWARGS, **kwargs}
    t = out["temperature"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
    k = out["top_k"]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0 (0/None = off), got {k!r}")
    g = out["generator"]
    if g is not None and not isinstance(g, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(g).__name__}")
    return out


logits_to_probs = ops.logits_to_probs
multinomial_sample_one_no_sync = ops.multinomial_sample_one_no_sync


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
           generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the next token from the logits of the last position.

    logits: ``[B, S, V]`` (the model's output; position ``S - 1`` is used), ``[B, V]`` or ``[V]``.
    Returns ``(idx, probs)``: int32 ``[B, 1]`` (``[1]`` for ``[V]`` input) and the sampling
    distribution ``[B, V]``. At temperature 0 the token is the argmax and no noise is drawn.
    """
    if logits.dim() == 3:
        logits = logits[:, -1]
    probs = ops.logits_to_probs(logits, temperature, top_k)
    if temperature == 0:
        idx = torch.argmax(logits, dim=-1, keepdim=True).to(torch.int32)
    else:
        idx = ops.multinomial_sample_one_no_sync(probs, generator)
    return idx, probs
