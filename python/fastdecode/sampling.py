"""Sampling API (gpt-fast and fish-speech names) on top of the C++ ops in ``ops.py``.

``sample`` works on the logits of the last position and returns ``(idx [B, 1], probs [B, V])``.
Knobs: ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``
(each a Python scalar or a per-row ``[B]`` tensor) and ``generator``. Order of application:
repetition penalty, temperature, top-k, softmax, top-p, min-p (see ``ops.logits_to_probs``).

The ``_agent`` variants are fish-speech's batch-first spellings: logits ``[B, V]`` (or
``[B, S, V]`` for ``sample_agent``) with ``previous_tokens`` ``[B, T]``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from . import ops
from .params import SamplingParams

__all__ = ["SAMPLING_KWARGS", "RECOMMENDED_SAMPLING", "validate_sampling_kwargs", "is_greedy", "logits_to_probs",
           "multinomial_sample_one_no_sync", "sample", "logits_to_probs_agent",
           "multinomial_sample_one_no_sync_agent", "sample_agent"]

# Knob -> default (SamplingParams' defaults). Anything else passed as **sampling_kwargs is
# rejected by name.
SAMPLING_KWARGS: Dict[str, Any] = SamplingParams().knobs()


# What the command line (`generate`, `chat`) and `make demo` sample with unless told
# otherwise: chosen on the default model (SmolLM2-135M-Instruct) over several seeds and
# prompts (docs/sampling.md). Higher temperatures or a wide top-k drift into other
# languages; lower ones, or no repetition penalty, loop on one phrase.
RECOMMENDED_SAMPLING: Dict[str, Any] = {"temperature": 0.6, "top_k": 40, "top_p": 0.9,
                                        "min_p": 0.05, "repetition_penalty": 1.1}


def validate_sampling_kwargs(kwargs: Dict[str, Any], batch_size: Optional[int] = None
                             ) -> Dict[str, Any]:
    """gpt-fast's ``**sampling_kwargs`` checked (``SamplingParams.from_kwargs``: names,
    types, per-row shapes, then the C++ op's ranges) and returned as the sampler's keywords
    with defaults filled in. ``TypeError`` for an unknown knob, ``ValueError`` naming the
    knob otherwise."""
    return SamplingParams.from_kwargs(kwargs, batch_size).knobs()


def is_greedy(temperature) -> bool:
    """True when every row samples at temperature 0 (no noise needs drawing)."""
    if isinstance(temperature, torch.Tensor):
        return bool((temperature == 0).all())
    return temperature == 0


# Same signature and semantics as the op wrapper (ops.logits_to_probs documents them).
logits_to_probs = ops.logits_to_probs


def multinomial_sample_one_no_sync(probs_sort: torch.Tensor,
                                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw per row of ``probs_sort`` (``[V]`` or ``[B, V]``, need not be sorted or
    normalised): int32 ``[1]`` / ``[B, 1]``, no host synchronisation."""
    return ops.multinomial_sample_one_no_sync(probs_sort, generator)


def sample(logits: torch.Tensor, previous_tokens: Optional[torch.Tensor] = None,
           **sampling_kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the next token from the logits of the last position.

    logits: ``[B, S, V]`` (position ``S - 1`` is used), ``[B, V]`` or ``[V]``.
    Returns ``(idx, probs)``: int32 ``[B, 1]`` (``[1]`` for ``[V]`` input) and the sampling
    distribution. At temperature 0 the token is the argmax (after the repetition penalty) and
    no noise is drawn.
    """
    generator = sampling_kwargs.pop("generator", None)
    if logits.dim() == 3:
        logits = logits[:, -1]
    probs = logits_to_probs(logits, previous_tokens, **sampling_kwargs)
    if is_greedy(sampling_kwargs.get("temperature", 1.0)):
        idx = ops.argmax_token(probs)  # the one-hot's index
    else:
        idx = ops.multinomial_sample_one_no_sync(probs, generator)
    return idx, probs


def _require_batch(name: str, t: Optional[torch.Tensor], dims) -> None:
    if t is not None and t.dim() not in dims:
        raise ValueError(f"{name} must be batch-first with {' or '.join(map(str, dims))} "
                         f"dimensions for the _agent variants, got shape {tuple(t.shape)}")


def logits_to_probs_agent(logits: torch.Tensor, previous_tokens: Optional[torch.Tensor] = None,
                          temperature=1.0, top_p=1.0, repetition_penalty=1.0,
                          **more_knobs) -> torch.Tensor:
    """Batch-first ``logits_to_probs``: logits ``[B, V]``, previous_tokens ``[B, T]``;
    ``top_k`` and ``min_p`` may be passed by keyword."""
    _require_batch("logits", logits, (2,))
    _require_batch("previous_tokens", previous_tokens, (2,))
    return logits_to_probs(logits, previous_tokens, temperature=temperature, top_p=top_p,
                           repetition_penalty=repetition_penalty, **more_knobs)


def multinomial_sample_one_no_sync_agent(probs_sort: torch.Tensor,
                                         generator: Optional[torch.Generator] = None
                                         ) -> torch.Tensor:
    """Batch-first ``multinomial_sample_one_no_sync``: ``[B, V]`` -> int32 ``[B, 1]``."""
    _require_batch("probs_sort", probs_sort, (2,))
    return ops.multinomial_sample_one_no_sync(probs_sort, generator)


def sample_agent(logits: torch.Tensor, previous_tokens: Optional[torch.Tensor] = None,
                 **sampling_kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch-first ``sample``: logits ``[B, S, V]`` or ``[B, V]``, previous_tokens
    ``[B, T]`` -> ``(idx [B, 1], probs [B, V])``."""
    _require_batch("logits", logits, (2, 3))
    _require_batch("previous_tokens", previous_tokens, (2,))
    return sample(logits, previous_tokens, **sampling_kwargs)
