"""What ``decode`` takes, checked before any work: the prompt rows, the stop and pad ids
(token ids in [0, vocab_size)), and the room the KV cache may have."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .model import Transformer
from .validation import as_token_id, as_token_ids, check_int

__all__ = ["prepare_prompt", "stop_ids_tensor", "check_token_ids", "cache_capacity",
           "INTERACTIVE_MAX_SEQ_LENGTH", "check_cache_room"]

# gpt-fast caps the KV cache at this many positions in interactive (chat) mode.
INTERACTIVE_MAX_SEQ_LENGTH = 350


def stop_ids_tensor(eos_id, vocab_size: int, device) -> Optional[torch.Tensor]:
    """``eos_id`` (None, one id or a sequence of ids; see ``validation.as_token_ids``) as an
    int64 tensor ``[S]``, or None."""
    if eos_id is None:
        return None
    ids = as_token_ids("eos_id", eos_id, vocab_size)
    return torch.tensor(ids, dtype=torch.int64, device=device) if ids else None


def prepare_prompt(model: Transformer, prompt: torch.Tensor,
                   batch_size: Optional[int]) -> torch.Tensor:
    """Validate ``prompt`` ``[T]`` or ``[B, T]`` and return it as ``[batch_size, T]`` int64."""
    if not isinstance(prompt, torch.Tensor):
        raise ValueError(f"prompt must be a torch.Tensor of token ids, got {type(prompt).__name__}")
    if prompt.dim() not in (1, 2) or prompt.shape[-1] == 0:
        raise ValueError(f"prompt must have shape (T,) or (B, T) with T >= 1, got "
                         f"{tuple(prompt.shape)}")
    if prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dtype == torch.bool:
        raise ValueError(f"prompt must hold integer token ids, got dtype {prompt.dtype}")
    vocab = model.config.vocab_size
    lo, hi = int(prompt.min()), int(prompt.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"prompt token ids must be in [0, {vocab}) (the model's vocab_size); "
                         f"got ids in [{lo}, {hi}]")
    rows = prompt.view(1, -1) if prompt.dim() == 1 else prompt
    if batch_size is None:
        batch_size = rows.shape[0]
    check_int("batch_size", batch_size, 1)
    if rows.shape[0] == 1 and batch_size > 1:
        rows = rows.expand(batch_size, -1)
    elif rows.shape[0] != batch_size:
        raise ValueError(f"batch_size ({batch_size}) does not match the prompt's {rows.shape[0]} "
                         "rows; pass a (T,) prompt to repeat it, or batch_size=None")
    return rows.to(torch.int64)


def cache_capacity(model: Transformer, interactive: bool) -> Tuple[int, str]:
    if interactive:  # gpt-fast's cap, never past what the model supports
        return min(INTERACTIVE_MAX_SEQ_LENGTH, model.config.block_size), "interactive cache"
    return model.config.block_size, "block_size"


def check_cache_room(model: Transformer, T: int, max_new_tokens: int,
                     interactive: bool) -> int:
    """``ValueError`` unless a prompt of ``T`` tokens and ``max_new_tokens`` fit the cache;
    returns its capacity."""
    capacity, what = cache_capacity(model, interactive)
    if T > capacity:
        raise ValueError(f"prompt has {T} tokens, more than the {what} ({capacity})")
    if T + max_new_tokens > capacity:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) + prompt length ({T}) exceeds the "
                         f"{what} ({capacity}); max_new_tokens may be at most {capacity - T}")
    return capacity


def check_token_ids(model: Transformer, stop_ids: Optional[torch.Tensor], pad_id) -> int:
    """Stop and pad ids are token ids: in [0, vocab_size), checked before any work (a bad
    pad id would otherwise reach the embedding once a row ends). Returns the pad id as a
    Python int: ``pad_id``, else the first stop id, else 0."""
    vocab = model.config.vocab_size
    if stop_ids is not None:
        bad = [int(i) for i in stop_ids.tolist() if not 0 <= int(i) < vocab]
        if bad:
            raise ValueError(f"eos_id must hold token ids in [0, {vocab}) (the model's "
                             f"vocab_size), got {bad}")
    if pad_id is not None:
        return as_token_id("pad_id", pad_id, vocab)
    return int(stop_ids[0]) if stop_ids is not None else 0
