"""gpt-fast's generation loop: prefill, one-token decode steps, ``generate``.

Shapes: B batch rows, T prompt length, N new tokens. Token ids are int64 in ``seq``;
the sampler returns int32 ``[B, 1]`` which is written straight into ``seq``.

The decode step (``decode_one_token``) is the hot path: one model call, one sampler call, no
host synchronisation and static shapes, so ``compile_decode_step()`` can capture it with
``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .model import Transformer
from .sampling import sample, validate_sampling_kwargs
from .speculative import shares_caches, speculative_decode_rows

__all__ = ["prefill", "decode_one_token", "decode_n_tokens", "generate",
           "compile_decode_step", "INTERACTIVE_MAX_SEQ_LENGTH"]

# gpt-fast caps the KV cache at this many positions in interactive (chat) mode.
INTERACTIVE_MAX_SEQ_LENGTH = 350


def prefill(model: Transformer, x: torch.Tensor, input_pos: torch.Tensor,
            previous_tokens: Optional[torch.Tensor] = None, **sampling_kwargs) -> torch.Tensor:
    """x ``[B, T]`` prompt ids, input_pos ``[T]`` -> first new token ``[B, 1]`` (int32)."""
    logits = model(x, input_pos, last_only=True)
    return sample(logits, previous_tokens, **sampling_kwargs)[0]


def decode_one_token(model: Transformer, x: torch.Tensor, input_pos: torch.Tensor,
                     previous_tokens: Optional[torch.Tensor] = None,
                     **sampling_kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """x ``[B, 1]``, input_pos ``[1]`` or ``[B, 1]`` -> (next token ``[B, 1]``, probs ``[B, V]``).

    previous_tokens ``[B, T']``: ids that receive the repetition penalty.
    """
    logits = model(x, input_pos)
    return sample(logits, previous_tokens, **sampling_kwargs)


# The step that decode_n_tokens calls; compile_decode_step() swaps in a compiled version.
_decode_step: Callable = decode_one_token


def compile_decode_step(enable: bool = True, mode: Optional[str] = None) -> None:
    """Compile the decode step with ``torch.compile(fullgraph=True)`` for later ``generate``
    calls (the first call after this pays the compile time); ``enable=False`` restores the
    eager step. Compiled steps draw from the global generator (``torch.manual_seed``):
    Dynamo cannot take a ``torch.Generator`` argument."""
    global _decode_step
    _decode_step = (torch.compile(decode_one_token, mode=mode, fullgraph=True, dynamic=False)
                    if enable else decode_one_token)


def _as_stop_ids(eos_id: Union[None, int, Sequence[int]], device) -> Optional[torch.Tensor]:
    if eos_id is None:
        return None
    ids = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    return torch.tensor(ids, dtype=torch.int64, device=device) if ids else None


def decode_n_tokens(model: Transformer, cur_token: torch.Tensor, input_pos: torch.Tensor,
                    num_new_tokens: int, callback: Callable = lambda _: _, *,
                    out: Optional[torch.Tensor] = None, stop_ids: Optional[torch.Tensor] = None,
                    pad_id: int = 0, done: Optional[torch.Tensor] = None,
                    previous_tokens: Optional[torch.Tensor] = None,
                    **sampling_kwargs) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Decode ``num_new_tokens`` tokens after ``cur_token [B, 1]`` at ``input_pos [1]``.

    Returns gpt-fast's ``(new_tokens, new_probs)`` lists (``[B, 1]`` and ``[B, V]`` each).
    With ``out`` ``[B, >= num_new_tokens]`` the tokens are written there instead and the
    lists stay empty. With ``stop_ids``, rows whose last token was a stop id (or that are
    already ``done`` ``[B]``) get ``pad_id``; decoding ends early once every row is done.
    ``input_pos`` is advanced in place. ``previous_tokens`` (a fixed-shape buffer, typically
    the ``seq`` that ``out`` is a view of) is passed to every step for the repetition penalty.
    """
    new_tokens: List[torch.Tensor] = []
    new_probs: List[torch.Tensor] = []
    if stop_ids is not None and done is None:
        done = torch.isin(cur_token.view(-1), stop_ids)
    for i in range(num_new_tokens):
        next_token, next_prob = _decode_step(model, cur_token, input_pos, previous_tokens,
                                             **sampling_kwargs)
        input_pos += 1
        if stop_ids is not None:
            next_token = torch.where(done.unsqueeze(1), pad_id, next_token)
            done = done | torch.isin(next_token.view(-1), stop_ids)
        if out is not None:
            out[:, i:i + 1] = next_token
        else:
            new_tokens.append(next_token.clone())
            new_probs.append(next_prob.clone())
        callback(next_token)
        cur_token = next_token
        if stop_ids is not None and bool(done.all()):
            if out is not None:
                out[:, i + 1:] = pad_id
            break
    return new_tokens, new_probs


def _check_positive_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _prepare_prompt(model: Transformer, prompt: torch.Tensor,
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
    _check_positive_int("batch_size", batch_size, 1)
    if rows.shape[0] == 1 and batch_size > 1:
        rows = rows.expand(batch_size, -1)
    elif rows.shape[0] != batch_size:
        raise ValueError(f"batch_size ({batch_size}) does not match the prompt's {rows.shape[0]} "
                         "rows; pass a (T,) prompt to repeat it, or batch_size=None")
    return rows.to(torch.int64)


def _check_draft(model: Transformer, draft_model, sampling_kwargs: dict) -> None:
    if not isinstance(draft_model, Transformer):
        raise ValueError(f"draft_model must be a fastdecode Transformer, got "
                         f"{type(draft_model).__name__}")
    if draft_model.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"draft_model's vocab_size ({draft_model.config.vocab_size}) must equal "
                         f"the target's ({model.config.vocab_size}): both score the same tokens")
    rp = sampling_kwargs["repetition_penalty"]
    if isinstance(rp, torch.Tensor) or rp != 1.0:
        raise ValueError("repetition_penalty must be 1.0 with speculative decoding (the "
                         "penalty of a draft position depends on the drafts before it); use "
                         "draft_model=None or speculate_k=0 to combine it with a penalty")


@torch.no_grad()
def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int,
             batch_size: Optional[int] = None, *, interactive: bool = False,
             draft_model: Optional[Transformer] = None, speculate_k: int = 8,
             callback: Callable = lambda x: x, eos_id: Union[None, int, Sequence[int]] = None,
             pad_id: Optional[int] = None, **sampling_kwargs
             ) -> Tuple[torch.Tensor, Dict[str, list]]:
    """Continue ``prompt`` by ``max_new_tokens`` tokens (gpt-fast's ``generate``).

    prompt: ``(T,)`` or ``(B, T)`` token ids; a ``(T,)`` prompt is repeated ``batch_size``
    times (``batch_size`` defaults to the prompt's rows).
    interactive: cap the KV cache at 350 positions (chat sessions).
    draft_model / speculate_k: speculative decoding: the draft proposes ``speculate_k``
    tokens per round, the target checks them in one pass, each row keeps its accepted prefix
    plus one target token (``fastdecode.speculative``). Same output distribution as plain
    decoding (identical tokens when greedy); ``speculate_k = 0`` decodes plainly. k is capped
    at the cache room left after ``max_new_tokens`` (only the speed changes).
    callback: called once per new token with the ``[B, 1]`` token tensor.
    eos_id: optional stop id(s); a row stops after producing one and the rest of the row is
    filled with ``pad_id`` (default: the first stop id). Rows are padded, never cut.
    sampling_kwargs: ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``,
    ``repetition_penalty`` (scalars or per-row ``[B]`` tensors) and ``generator``. The
    repetition penalty covers the prompt and every token generated so far, as in Hugging Face.

    Returns ``(seq [B, T + max_new_tokens] int64, {"accept_counts": [...]})``;
    ``accept_counts[a]`` (length ``speculate_k + 1``) counts the (row, round) pairs that
    accepted ``a`` draft tokens; all zero without a draft.
    """
    _check_positive_int("max_new_tokens", max_new_tokens, 1)
    _check_positive_int("speculate_k", speculate_k, 0)
    rows = _prepare_prompt(model, prompt, batch_size)
    bsz, T = rows.shape
    sampling_kwargs = validate_sampling_kwargs(sampling_kwargs, batch_size=bsz)
    capacity = INTERACTIVE_MAX_SEQ_LENGTH if interactive else model.config.block_size
    if T > capacity:
        raise ValueError(f"prompt has {T} tokens, more than the "
                         f"{'interactive cache' if interactive else 'block_size'} ({capacity})")
    if T + max_new_tokens > capacity:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) + prompt length ({T}) exceeds the "
                         f"{'interactive cache' if interactive else 'block_size'} ({capacity}); "
                         f"max_new_tokens may be at most {capacity - T}")
    speculative = draft_model is not None and speculate_k > 0
    if speculative:
        _check_draft(model, draft_model, sampling_kwargs)
        # the target's check pass writes up to k positions past a row's last token
        k_eff = min(speculate_k, capacity - T - max_new_tokens)
        speculative = k_eff > 0 and max_new_tokens > 1
    device = rows.device
    stop_ids = _as_stop_ids(eos_id, device)
    if pad_id is None:
        pad_id = int(stop_ids[0]) if stop_ids is not None else 0

    T_new = T + max_new_tokens
    max_seq_length = capacity if interactive else T_new + (k_eff if speculative else 0)
    with torch.device(device):
        model.setup_caches(max_batch_size=bsz, max_seq_length=max_seq_length)
        if speculative and draft_model is not model:
            draft_model.setup_caches(max_batch_size=bsz, max_seq_length=max_seq_length)

    # Positions not generated yet hold each row's first prompt token: that id is already
    # among the previous tokens, and the penalty counts each distinct id once, so the
    # fixed-shape seq can serve as previous_tokens at every step (static shapes for compile).
    seq = rows[:, :1].expand(bsz, T_new).clone()
    seq[:, :T] = rows
    rp = sampling_kwargs["repetition_penalty"]
    penalised = isinstance(rp, torch.Tensor) or rp != 1.0
    previous_tokens = seq if penalised else None
    input_pos = torch.arange(0, T, device=device)
    next_token = prefill(model, rows, input_pos, previous_tokens, **sampling_kwargs)
    seq[:, T:T + 1] = next_token
    callback(next_token)
    accept_counts = [0] * (speculate_k + 1)
    if speculative:
        if not shares_caches(draft_model, model):
            draft_model(rows, input_pos, last_only=True)  # fills the draft's caches
        counts = speculative_decode_rows(model, draft_model, seq, T, k_eff, callback, stop_ids,
                                         pad_id, sampling_kwargs)
        accept_counts[:len(counts)] = counts
        return seq, {"accept_counts": accept_counts}
    input_pos = torch.tensor([T], device=device, dtype=torch.int64)
    decode_n_tokens(model, next_token, input_pos, max_new_tokens - 1, callback,
                    out=seq[:, T + 1:], stop_ids=stop_ids, pad_id=pad_id,
                    previous_tokens=previous_tokens, **sampling_kwargs)
    return seq, {"accept_counts": accept_counts}
