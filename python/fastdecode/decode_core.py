"""The one decode core: prefill, one-token decode steps, ``decode_loop`` and ``decode`` (the
loop every entry point drives; the API styles on top live in ``fastdecode.compat``).

Shapes: B batch rows, T prompt length, N new tokens. Token ids are int64 in ``seq``;
the sampler returns int32 ``[B, 1]`` which is written straight into ``seq``.

``decode`` runs one prompt batch to the end: static KV cache sized once, the prompt and new
tokens written in place into one ``seq [B, T + N]`` buffer (no per-step ``torch.cat``),
stop ids and caller stop conditions ending rows, speculative rounds when a draft is given.
gpt-fast's ``generate``, fish-speech's ``generate`` / ``decode_n_tokens`` / ``generate_long``
and the queue, ``LLM.generate`` and the chat REPL (``compat/``) all call it.

The decode step (``decode_one_token``) is the hot path: one model call, one sampler call, no
host synchronisation and static shapes, so ``compile_decode_step(model)`` can capture it with
``torch.compile(fullgraph=True)``; ``decode_step_of(model)`` is the one place that picks the
compiled or the eager step.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from .cancel import check_cancelled, current_cancel_event
from .decode_inputs import (INTERACTIVE_MAX_SEQ_LENGTH, check_cache_room, check_token_ids,
                            prepare_prompt)
from .decode_lock import ReentrantDecodeError, exclusive
from .model import Transformer
from .params import SamplingParams
from .sampling import sample
from .speculative import shares_caches, speculative_decode_rows

__all__ = ["prefill", "decode_one_token", "decode_loop", "iter_decode_loop", "decode",
           "decode_session", "iter_positions", "PositionSteps",
           "DecodeResult",
           "compile_decode_step", "decode_step_of", "prepare_prompt",
           "INTERACTIVE_MAX_SEQ_LENGTH", "ReentrantDecodeError", "StopRows"]


# Called after each new token column [B, 1]; returns a [B] bool tensor of rows that end
# there (their later tokens are padded) or None.
StopRows = Callable[[torch.Tensor], Optional[torch.Tensor]]


def _chosen_logprob(logits: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: logits ``[B, V]``, token ``[B, 1]`` -> ``[B, 1]`` fp32,
    under the model's unmodified distribution (no temperature, no filtering)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, token.long())


def prefill(model: Transformer, x: torch.Tensor, input_pos: torch.Tensor,
            previous_tokens: Optional[torch.Tensor] = None, *, logprobs: bool = False,
            **sampling_kwargs):
    """x ``[B, T]`` prompt ids, input_pos ``[T]`` -> first new token ``[B, 1]`` (int32);
    with ``logprobs``, ``(token, logprob [B, 1])``."""
    logits = model(x, input_pos, last_only=True)
    token = sample(logits, previous_tokens, **sampling_kwargs)[0]
    return (token, _chosen_logprob(logits[:, -1], token)) if logprobs else token


def decode_one_token(model: Transformer, x: torch.Tensor, input_pos: torch.Tensor,
                     previous_tokens: Optional[torch.Tensor] = None, *, logprobs: bool = False,
                     **sampling_kwargs):
    """x ``[B, 1]``, input_pos ``[1]`` or ``[B, 1]`` -> (next token ``[B, 1]``, probs ``[B, V]``)
    and, with ``logprobs``, the token's log-probability ``[B, 1]`` as a third element.

    previous_tokens ``[B, T']``: ids that receive the repetition penalty.
    """
    logits = model(x, input_pos)
    token, probs = sample(logits, previous_tokens, **sampling_kwargs)
    if logprobs:
        return token, probs, _chosen_logprob(logits[:, -1], token)
    return token, probs


def compile_decode_step(model: Transformer, enable: bool = True,
                        mode: Optional[str] = None) -> None:
    """Compile ``model``'s decode step with ``torch.compile(fullgraph=True)`` for every later
    decode of that model (the first call pays the compile time); ``enable=False`` restores
    the eager step. Compiled steps draw from the global generator (``torch.manual_seed``):
    Dynamo cannot take a ``torch.Generator`` argument, so ``decode`` refuses one with a
    compiled step."""
    model.compiled_decode_step = (
        torch.compile(decode_one_token, mode=mode, fullgraph=True, dynamic=False)
        if enable else None)


def decode_step_of(model: Transformer) -> Callable:
    """The decode step ``decode`` runs for ``model``: compiled (``compile_decode_step``) or
    eager ``decode_one_token``."""
    return getattr(model, "compiled_decode_step", None) or decode_one_token


def _first_row(tokens: torch.Tensor) -> torch.Tensor:
    """The ids the stop conditions read: text ``[B, 1]`` -> ``[B]``; a codebook position
    ``[B, R, 1]`` -> row 0 (the token; the codes follow it), ``[B]``."""
    return (tokens[:, 0] if tokens.dim() == 3 else tokens).reshape(-1)


def _ended(done: torch.Tensor, tokens: torch.Tensor, stop_ids: Optional[torch.Tensor],
           stop_rows: Optional[StopRows]) -> torch.Tensor:
    """``done`` [B] with the rows that ``tokens`` (a new position) end: a stop id in row 0,
    or ``stop_rows``' verdict."""
    if stop_ids is not None:
        done = done | torch.isin(_first_row(tokens), stop_ids)
    if stop_rows is not None:
        hit = stop_rows(tokens)
        if hit is not None:
            done = done | hit
    return done


def iter_decode_loop(model, cur_token: torch.Tensor, input_pos: torch.Tensor,
                     num_new_tokens: int, *, step: Callable, out: Optional[torch.Tensor],
                     new_probs: Optional[List[torch.Tensor]], stop_ids: Optional[torch.Tensor],
                     stop_rows: Optional[StopRows], pad_id: int, done: Optional[torch.Tensor],
                     previous_tokens: Optional[torch.Tensor],
                     logprobs_out: Optional[torch.Tensor], sampling_kwargs: dict,
                     enough: Optional[Callable[[torch.Tensor], bool]] = None):
    """THE decode loop, as a generator: yields each new position's tokens (text ``[B, 1]``,
    codebook models ``[B, R, 1]``: R token rows a position) after writing them into
    ``out[..., i]`` (and ``new_probs`` / ``logprobs_out``).

    A row is done once its token (row 0) is a stop id or ``stop_rows`` said so; done rows
    get ``pad_id`` in every token row, and the loop ends when every row is done or
    ``enough(done)`` (one host sync per step, only when stop conditions exist). ``done``
    ``[B]``: rows already done (default: those whose ``cur_token`` is a stop id).
    ``input_pos`` advances in place; a cancelled thread stops at the next position.
    """
    stopping = stop_ids is not None or stop_rows is not None
    if stopping and done is None:
        done = torch.zeros(cur_token.shape[0], dtype=torch.bool, device=cur_token.device)
        if stop_ids is not None:
            done |= torch.isin(_first_row(cur_token), stop_ids)
    extra = {"logprobs": True} if logprobs_out is not None else {}
    cancel = current_cancel_event()
    done_view = (-1,) + (1,) * (cur_token.dim() - 1)  # done [B] against a position's tokens
    for i in range(num_new_tokens):
        if cancel is not None and cancel.is_set():
            check_cancelled()
        result = step(model, cur_token, input_pos, previous_tokens, **extra, **sampling_kwargs)
        next_token = result[0] if isinstance(result, tuple) else result
        input_pos += 1
        if stopping:
            next_token = torch.where(done.view(done_view), pad_id, next_token)
        if out is not None:
            out[..., i:i + 1] = next_token
        if new_probs is not None:
            new_probs.append(result[1].clone())
        if logprobs_out is not None:
            logprobs_out[:, i:i + 1] = result[2]
        yield next_token
        cur_token = next_token
        if stopping:
            done = _ended(done, next_token, stop_ids, stop_rows)
            if bool(done.all()) or (enough is not None and enough(done)):
                if out is not None:
                    out[..., i + 1:] = pad_id
                return


def decode_loop(model, cur_token: torch.Tensor, input_pos: torch.Tensor,
                num_new_tokens: int, callback: Callable, **loop) -> int:
    """``iter_decode_loop`` run to its end, ``callback`` given each new position's tokens;
    returns the number of positions decoded."""
    steps = 0
    for column in iter_decode_loop(model, cur_token, input_pos, num_new_tokens, **loop):
        callback(column)
        steps += 1
    return steps


@dataclass(frozen=True)
class PositionSteps:
    """A model family's steps as the core drives them (the text implementation is built in
    ``decode``; fish-speech's DualAR and naive codebook models have theirs in
    ``compat/fish_speech/codebook_decode``).

    ``prefill(model, prompt, input_pos)``: prompt ``[B, T]`` (text) or ``[B, rows, T]``,
    input_pos ``[T]`` -> the first new position's tokens ``[B, 1]`` / ``[B, rows, 1]``.
    ``step(model, cur, input_pos, previous_tokens, **knobs)``: one position after ``cur``
    -> its tokens (or a tuple led by them: token, probs, logprob). How many token rows a
    position holds is read from the tokens' shape (``[B, 1]`` text, ``[B, rows, 1]``).
    """
    prefill: Callable
    step: Callable


def iter_positions(model, steps: PositionSteps, prompt: torch.Tensor, max_new_tokens: int, *,
                   out: Optional[torch.Tensor], stop_first: bool = True, **loop):
    """A whole decode of ``prompt`` (caches set up by the caller's ``decode_session``):
    ``steps.prefill``, then up to ``max_new_tokens - 1`` positions in ``iter_decode_loop``
    with ``steps.step``; yields every new position's tokens, the first included, after
    writing them into ``out [B, (rows,) max_new_tokens]``. ``stop_first``: whether the first
    position may end a row (fish-speech's ``generate`` lets it go on). ``loop``: the
    stopping, padding and sampling arguments of ``iter_decode_loop``."""
    T = prompt.shape[-1]
    device = prompt.device
    first = steps.prefill(model, prompt, torch.arange(0, T, device=device))
    if out is not None:
        out[..., :1] = first
    yield first
    stop_ids, stop_rows = loop["stop_ids"], loop["stop_rows"]
    done = None
    if stop_ids is not None or stop_rows is not None:
        done = torch.zeros(first.shape[0], dtype=torch.bool, device=device)
        if stop_first:
            done = _ended(done, first, stop_ids, stop_rows)
        if bool(done.all()):
            if out is not None:
                out[..., 1:] = loop["pad_id"]
            return
    yield from iter_decode_loop(model, first, torch.tensor([T], device=device),
                                max_new_tokens - 1, step=steps.step,
                                out=None if out is None else out[..., 1:], done=done, **loop)


def _check_draft(model: Transformer, draft_model, params: SamplingParams) -> None:
    if not isinstance(draft_model, Transformer):
        raise ValueError(f"draft_model must be a fastdecode Transformer, got "
                         f"{type(draft_model).__name__}")
    if draft_model.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"draft_model's vocab_size ({draft_model.config.vocab_size}) must equal "
                         f"the target's ({model.config.vocab_size}): both score the same tokens")
    if params.penalised:
        raise ValueError("repetition_penalty must be 1.0 with speculative decoding (the "
                         "penalty of a draft position depends on the drafts before it); use "
                         "draft_model=None or speculate_k=0 to combine it with a penalty")


@dataclass
class DecodeResult:
    """What ``decode`` produced. ``seq [B, T + N]`` int64: the prompt, then each row's new
    tokens, ``pad_id`` after a row ended. ``steps``: new-token columns decoded (N when no
    row stopped early). ``logprobs [B, N]`` fp32 when asked for. Seconds: ``prefill_s``
    (caches, prompt pass, first token) and ``decode_s`` (the rest)."""
    seq: torch.Tensor
    prompt_len: int
    steps: int
    accept_counts: List[int]
    prefill_s: float
    decode_s: float
    logprobs: Optional[torch.Tensor] = None


@contextlib.contextmanager
def decode_session(model, batch: int, positions: int, device,
                   draft: Optional[Transformer] = None):
    """The cache set-up of every decode, text or codebook models: the model's decode lock
    (one decode per model; a callback's re-entrant decode raises), then KV caches for
    ``batch`` rows of ``positions`` (the memory check first, in ``setup_caches``), for the
    draft too when it has caches of its own. Held for the whole decode."""
    with exclusive(model, draft):
        with torch.device(device):
            model.setup_caches(batch, positions)
            if draft is not None and draft is not model:  # its own RoPE tables at least
                draft.setup_caches(batch, positions)
        yield


@torch.no_grad()
def decode(model: Transformer, rows: torch.Tensor, max_new_tokens: int, *,
           params: SamplingParams, interactive: bool = False,
           draft_model: Optional[Transformer] = None, speculate_k: int = 0,
           callback: Callable = lambda x: x, stop_ids: Optional[torch.Tensor] = None,
           pad_id: Optional[int] = None, stop_rows: Optional[StopRows] = None,
           step: Optional[Callable] = None, logprobs: bool = False) -> DecodeResult:
    """Prefill ``rows [B, T]`` (int64, validated by ``prepare_prompt``) and decode up to
    ``max_new_tokens`` tokens per row: the loop behind every entry point.

    params: the request's ``SamplingParams`` (checked when built; per-row knobs must have
    B rows; a ``seed`` becomes the request's own generator, or seeds the global one for a
    compiled step, which cannot take a generator). stop_ids ``[S]`` int64
    and ``stop_rows`` end rows (the stop token is kept, later ones are ``pad_id``, default
    the first stop id or 0); decoding ends when every row has ended. ``callback`` gets each
    new token column ``[B, 1]``. ``step`` replaces ``decode_step_of(model)`` (fish-speech's
    ``decode_one_token``); ``logprobs`` records each chosen token's log-probability under the
    model's unmodified softmax (not with a draft). With ``draft_model`` and
    ``speculate_k > 0``: speculative rounds (``fastdecode.speculative``).
    """
    bsz, T = rows.shape
    capacity = check_cache_room(model, T, max_new_tokens, interactive)
    step = step or decode_step_of(model)
    params.check_rows(bsz)
    compiled = getattr(model, "compiled_decode_step", None) is not None
    if params.generator is not None and compiled:
        raise ValueError("generator cannot be passed to a compiled decode step (Dynamo cannot "
                         "take a torch.Generator): pass a seed, or seed with torch.manual_seed")
    speculative = draft_model is not None and speculate_k > 0
    k_eff = 0
    if speculative:
        _check_draft(model, draft_model, params)
        if logprobs:
            raise ValueError("logprobs are not recorded with a draft_model")
        # the target's check pass writes up to k positions past a row's last token
        k_eff = min(speculate_k, capacity - T - max_new_tokens)
        speculative = k_eff > 0 and max_new_tokens > 1
    device = rows.device
    pad_id = check_token_ids(model, stop_ids, pad_id)
    check_cancelled()
    if compiled and params.seed is not None:
        torch.manual_seed(params.seed)  # compiled steps draw from the global generator
        sampling_kwargs = params.knobs()  # (a seed excludes a generator: none in the knobs)
    else:
        sampling_kwargs = params.with_generator(rows.device).knobs()
    T_new = T + max_new_tokens
    max_seq_length = capacity if interactive else T_new + (k_eff if speculative else 0)
    t0 = time.perf_counter()
    with decode_session(model, bsz, max_seq_length, device,
                        draft_model if speculative else None):

        # Positions not generated yet hold each row's first prompt token: that id is already
        # among the previous tokens, and the penalty counts each distinct id once, so the
        # fixed-shape seq can serve as previous_tokens at every step (static shapes for compile).
        seq = rows[:, :1].expand(bsz, T_new).clone()
        seq[:, :T] = rows
        previous_tokens = seq if params.penalised else None
        logprobs_out = (torch.zeros((bsz, max_new_tokens), dtype=torch.float32, device=device)
                        if logprobs else None)

        def text_prefill(model, x, input_pos):
            first = prefill(model, x, input_pos, previous_tokens, logprobs=logprobs,
                            **sampling_kwargs)
            if logprobs:
                first, logprobs_out[:, :1] = first
            return first

        text = PositionSteps(prefill=text_prefill, step=step)
        stopping = dict(stop_ids=stop_ids, stop_rows=stop_rows, pad_id=pad_id)
        accept_counts = [0] * (speculate_k + 1)
        positions = iter_positions(
            model, text, rows, max_new_tokens, out=seq[:, T:], new_probs=None,
            previous_tokens=previous_tokens, sampling_kwargs=sampling_kwargs,
            logprobs_out=None if logprobs_out is None else logprobs_out[:, 1:], **stopping)
        first = next(positions)
        callback(first)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if speculative:
            positions.close()
            done = _ended(torch.zeros(bsz, dtype=torch.bool, device=device), first,
                          stop_ids, stop_rows)
            if bool(done.all()):
                seq[:, T + 1:] = pad_id
                steps = 1
            else:
                if not shares_caches(draft_model, model):  # fill the draft's caches
                    draft_model(rows, torch.arange(0, T, device=device), last_only=True)
                counts, steps = speculative_decode_rows(
                    model, draft_model, seq, T, k_eff, callback, stop_ids, pad_id,
                    sampling_kwargs, stop_rows=stop_rows, done=done.tolist())
                accept_counts[:len(counts)] = counts
        else:
            steps = 1
            for column in positions:
                callback(column)
                steps += 1
        return DecodeResult(seq=seq, prompt_len=T, steps=steps, accept_counts=accept_counts,
                            prefill_s=prefill_s, decode_s=time.perf_counter() - t0,
                            logprobs=logprobs_out)
