"""Decoding codebook models (seed 002, fish-speech's DualAR half): one step, n steps, whole
generations, and the batch-first ``_agent`` variants, on ``fastdecode.sample`` and the fused
decode step of ``dual_ar``'s transformers.

Shapes: C = num_codebooks, rows = C + 1 (token row, then one row per codebook).
- ``decode_one_token_ar`` / ``decode_one_token_naive`` (batch 1): x ``[1, rows, S]`` ->
  ``[rows, 1]``; ``decode_n_tokens`` -> ``[rows, n]``; ``generate`` (in ``long_form``) ->
  ``[rows, T + n]``.
- ``_agent`` variants: x ``[B, rows, S]`` -> ``[B, rows, 1]``; codes of rows whose token is
  not in ``semantic_ids`` are ``CODEBOOK_PAD_TOKEN_ID``; ``decode_n_tokens_agent`` and
  ``generate_agent`` yield ``[B, rows, 1]`` per step.

What fish-speech does and we do too: the token of the ``_agent`` steps and of
``decode_one_token_naive`` is drawn at temperature 0.1, top_p 0.1 and no repetition penalty
(the codes with the caller's knobs); the repetition penalty of the codes looks at the last 16
positions. What we skip: zero-filling the fast transformer's caches before each position
(every cache row it reads is rewritten first, so the result is the same).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch

from ...decode_core import (PositionSteps, decode_loop, decode_session, iter_decode_loop,
                            iter_positions)
from ...dual_ar import CODEBOOK_PAD_TOKEN_ID, CodebookModel, DualARTransformer, NaiveTransformer
from ...sampling import sample, validate_sampling_kwargs
from ...validation import as_token_id, check_int, check_range
from .codebook_prompt import encode_tokens

__all__ = ["decode_one_token_ar", "decode_one_token_ar_agent", "decode_one_token_naive_codes",
           "decode_one_token_naive_agent", "decode_n_tokens_codes", "decode_n_tokens_agent",
           "generate_codes", "generate_agent", "encode_tokens", "PENALTY_WINDOW"]

PENALTY_WINDOW = 16  # positions the codes' repetition penalty looks back at


def _main_knobs(knobs: dict) -> dict:
    """The token row's knobs in the agent / naive steps (fish-speech's fixed values)."""
    return {**knobs, "temperature": 0.1, "top_p": 0.1, "repetition_penalty": 1.0}


def _draw(logits: torch.Tensor, previous: Optional[torch.Tensor], knobs: dict) -> torch.Tensor:
    """logits ``[B, 1, V]`` -> int64 ``[B, 1]``."""
    return sample(logits, previous, **knobs)[0].long()


def _semantic_mask(codes: torch.Tensor, semantic_ids: Sequence[int]) -> torch.Tensor:
    """``codes [B, rows, 1]``: codes of rows whose token is not a semantic id -> pad."""
    ids = torch.as_tensor(list(semantic_ids), dtype=codes.dtype, device=codes.device)
    keep = torch.isin(codes[:, :1], ids)
    codes[:, 1:] = codes[:, 1:].masked_fill(~keep, CODEBOOK_PAD_TOKEN_ID)
    return codes


def _check_step(model, kind, x, semantic_ids, batch_first: bool) -> None:
    if not isinstance(model, kind):
        raise TypeError(f"this step decodes a {kind.__name__}, got {type(model).__name__}")
    model.check_input(x)
    if not batch_first and x.shape[0] != 1:
        raise ValueError(f"x must hold one row [1, rows, S] (use the _agent variant for "
                         f"batches), got {tuple(x.shape)}")
    if semantic_ids is not None:
        _check_semantic_ids(model, semantic_ids)


def _check_semantic_ids(model, semantic_ids) -> None:
    """A list (or tuple) of Python-int token ids in [0, vocab_size)."""
    vocab = model.config.vocab_size
    if not isinstance(semantic_ids, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in semantic_ids) or (
            semantic_ids and not (0 <= min(semantic_ids) and max(semantic_ids) < vocab)):
        raise ValueError(f"semantic_ids must be a list of token ids in [0, {vocab}), got "
                         f"{_short(semantic_ids)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _codebook_loop(model: DualARTransformer, hidden: torch.Tensor, first: Optional[torch.Tensor],
                   previous: Optional[torch.Tensor], knobs: dict) -> list:
    """The fast transformer over one position's codebooks. ``first``: code 0 when it is given
    by the token (decode_one_token_ar), else drawn too. previous ``[B, rows, W]`` or None."""
    codes = []
    x = hidden
    for i in range(model.config.num_codebooks):
        logits = model.forward_generate_fast(x, torch.tensor([i], device=hidden.device))
        if i == 0 and first is not None:
            code = first
        else:
            code = _draw(logits, None if previous is None else previous[:, i + 1], knobs)
        codes.append(code)
        x = model.fast_embeddings(code)
    return codes


@torch.no_grad()
def decode_one_token_ar(model: DualARTransformer, x: torch.Tensor, input_pos: torch.Tensor,
                        semantic_ids: list, previous_tokens: torch.Tensor = None,
                        **sampling_kwargs) -> torch.Tensor:
    """One position of a DualAR model: x ``[1, rows, S]`` -> ``[rows, 1]``. The token with
    the caller's knobs (penalty over ``previous_tokens[0]``); code 0 is the token's semantic
    index (``token - semantic_begin_id``, pad when it is not semantic), codes 1.. from the fast
    transformer. ``previous_tokens``: ``[rows, W]``."""
    _check_step(model, DualARTransformer, x, semantic_ids, batch_first=False)
    knobs = validate_sampling_kwargs(dict(sampling_kwargs), batch_size=1)
    prev = None if previous_tokens is None else previous_tokens.unsqueeze(0)
    out = model.forward_generate(x, input_pos)
    token = _draw(out.logits, None if prev is None else prev[:, 0], knobs)
    c = model.config
    semantic = (token >= c.semantic_begin_id) & (token <= c.semantic_end_id)
    first = torch.where(semantic, token - c.semantic_begin_id,
                        torch.full_like(token, CODEBOOK_PAD_TOKEN_ID))
    codes = _codebook_loop(model, out.hidden_states, first, prev, knobs)
    return torch.stack([token] + codes, dim=1)[0]


@torch.no_grad()
def decode_one_token_ar_agent(model: DualARTransformer, x: torch.Tensor,
                              input_pos: torch.Tensor, semantic_ids: list,
                              previous_tokens: torch.Tensor = None,
                              **sampling_kwargs) -> torch.Tensor:
    """Batch-first DualAR step: x ``[B, rows, S]`` -> ``[B, rows, 1]``; every code from the
    fast transformer, codes of non-semantic tokens padded. previous ``[B, rows, W]``."""
    _check_step(model, DualARTransformer, x, semantic_ids, batch_first=True)
    knobs = validate_sampling_kwargs(dict(sampling_kwargs), batch_size=x.shape[0])
    out = model.forward_generate(x, input_pos)
    token = _draw(out.logits, None, _main_knobs(knobs))
    codes = _codebook_loop(model, out.hidden_states, None, previous_tokens, knobs)
    return _semantic_mask(torch.stack([token] + codes, dim=1), semantic_ids)


def _naive_codes(model: NaiveTransformer, x, input_pos, previous, knobs, main_knobs):
    out = model.forward_generate(x, input_pos)
    token = _draw(out.token_logits, None, main_knobs)
    codes = [_draw(out.codebook_logits[:, :, i], None if previous is None
                   else previous[:, i + 1], knobs)
             for i in range(model.config.num_codebooks)]
    return torch.stack([token] + codes, dim=1)


@torch.no_grad()
def decode_one_token_naive_codes(model: NaiveTransformer, x: torch.Tensor,
                                 input_pos: torch.Tensor, previous_tokens: torch.Tensor = None,
                                 **sampling_kwargs) -> torch.Tensor:
    """fish-speech's ``decode_one_token_naive`` for a NaiveTransformer: x ``[1, rows, S]`` ->
    ``[rows, 1]`` (``long_form.decode_one_token_naive`` dispatches here)."""
    _check_step(model, NaiveTransformer, x, None, batch_first=False)
    knobs = validate_sampling_kwargs(dict(sampling_kwargs), batch_size=1)
    prev = None if previous_tokens is None else previous_tokens.unsqueeze(0)
    return _naive_codes(model, x, input_pos, prev, knobs, _main_knobs(knobs))[0]


@torch.no_grad()
def decode_one_token_naive_agent(model: NaiveTransformer, x: torch.Tensor,
                                 input_pos: torch.Tensor, semantic_ids: list,
                                 previous_tokens: torch.Tensor = None,
                                 **sampling_kwargs) -> torch.Tensor:
    """Batch-first NaiveTransformer step: ``[B, rows, S]`` -> ``[B, rows, 1]``, the token with
    the caller's knobs, codes of non-semantic tokens padded."""
    _check_step(model, NaiveTransformer, x, semantic_ids, batch_first=True)
    knobs = validate_sampling_kwargs(dict(sampling_kwargs), batch_size=x.shape[0])
    codes = _naive_codes(model, x, input_pos, previous_tokens, knobs, knobs)
    return _semantic_mask(codes, semantic_ids)


def _window(history: torch.Tensor, i: int) -> torch.Tensor:
    """The repetition-penalty window of step i over ``history [..., rows, L]``."""
    if i < PENALTY_WINDOW:
        return history[..., :PENALTY_WINDOW]
    return history[..., i - PENALTY_WINDOW:i]


def _im_end_id(model, im_end_id: Optional[int]) -> Optional[int]:
    if im_end_id is not None:
        return as_token_id("im_end_id", im_end_id, model.config.vocab_size)
    tokenizer = getattr(model, "tokenizer", None)
    return getattr(tokenizer, "im_end_id", None) if tokenizer is not None else None


@torch.no_grad()
def decode_n_tokens_codes(model: CodebookModel, cur_token: torch.Tensor,
                          input_pos: torch.Tensor, num_new_tokens: int, semantic_ids: list,
                          decode_one_token=None, im_end_id: Optional[int] = None,
                          **sampling_kwargs) -> torch.Tensor:
    """Up to ``num_new_tokens`` positions after ``cur_token [1, rows, 1]`` -> ``[rows, n]``,
    stopping after the token ``im_end_id`` (default: the model tokenizer's, if any).
    ``input_pos`` advances in place."""
    check_int("num_new_tokens", num_new_tokens, 0)
    rows = model.config.num_codebooks + 1
    history = torch.zeros((1, rows, max(num_new_tokens, PENALTY_WINDOW)), dtype=torch.int64,
                          device=cur_token.device)
    end = _im_end_id(model, im_end_id)
    position = _single_row_step(model, decode_one_token, history, semantic_ids,
                                sampling_kwargs)
    # the prompt's last token may be im_end: only the new positions stop decoding
    n = decode_loop(model, cur_token, input_pos, num_new_tokens, lambda _: None,
                    step=position, out=history, new_probs=None, **_stop_at(end, cur_token),
                    done=torch.zeros(1, dtype=torch.bool, device=cur_token.device),
                    previous_tokens=None, logprobs_out=None, sampling_kwargs={})
    return history[0, :, :n]


def _stop_at(end: Optional[int], like: torch.Tensor) -> dict:
    """The loop's stopping arguments for fish-speech's ``im_end_id`` (None: no stop)."""
    return dict(stop_ids=None if end is None else torch.tensor([end], device=like.device),
                stop_rows=None, pad_id=end or 0)


def _single_row_step(model, decode_one_token, history: torch.Tensor, semantic_ids,
                     sampling_kwargs: dict) -> Callable:
    """The loop's step for one row of a codebook model: ``decode_one_token`` (default: the
    model's own) with the penalty window over ``history [1, rows, L]``, shaped
    ``[1, rows, 1]``."""
    step = decode_one_token or _default_step(model, agent=False)
    rows = model.config.num_codebooks + 1
    kwargs = _step_kwargs(step, semantic_ids, sampling_kwargs)
    return _windowed(history, lambda m, cur, pos, window: step(
        m, cur, pos, previous_tokens=window[0], **kwargs).view(1, rows, 1))


def _windowed(history: torch.Tensor, step: Callable) -> Callable:
    """The core loop's step for a codebook model: ``step(model, cur, pos, window)`` with the
    repetition-penalty window of the position being decoded (``PENALTY_WINDOW`` positions
    of ``history [B, rows, L]``, the loop's ``out``)."""
    count = [0]

    def position_step(model, cur, input_pos, _previous, **_):
        i = count[0]
        count[0] += 1
        return step(model, cur, input_pos, _window(history, i))
    return position_step


def _step_kwargs(step, semantic_ids, sampling_kwargs: dict) -> dict:
    """A single-row step's keywords: the DualAR steps take ``semantic_ids``, the naive one
    (fish-speech's ``decode_one_token_naive`` signature) does not."""
    if step is decode_one_token_ar or step is decode_one_token_ar_agent:
        return {**sampling_kwargs, "semantic_ids": semantic_ids}
    return sampling_kwargs


def _default_step(model, agent: bool):
    if isinstance(model, DualARTransformer):
        return decode_one_token_ar_agent if agent else decode_one_token_ar
    if isinstance(model, NaiveTransformer):
        return decode_one_token_naive_agent if agent else decode_one_token_naive_codes
    raise TypeError(f"expected a DualARTransformer or NaiveTransformer, got "
                    f"{type(model).__name__}")


def _check_prompt(model, prompt) -> int:
    """A whole prompt ``[rows, T]`` (codes checked by the model's step); returns rows."""
    rows = model.config.num_codebooks + 1
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != rows:
        raise ValueError(f"prompt must be [num_codebooks + 1 = {rows}, T], got "
                         f"{tuple(getattr(prompt, 'shape', ()))}")
    return rows


def _new_tokens(model, prompt_len: int, max_new_tokens: int) -> int:
    """fish-speech's rule: 0 means up to max_seq_len; the total is capped at max_seq_len."""
    check_int("max_new_tokens", max_new_tokens, 0)
    limit = model.config.max_seq_len
    if prompt_len >= limit:
        raise ValueError(f"the prompt ({prompt_len} positions) must be shorter than the "
                         f"model's max_seq_len ({limit})")
    return min(max_new_tokens or limit, limit - prompt_len)


@torch.no_grad()
def generate_codes(*, model: CodebookModel, prompt: torch.Tensor, max_new_tokens: int,
                   decode_one_token=None, im_end_id: Optional[int] = None,
                   semantic_ids: Optional[Sequence[int]] = None,
                   **sampling_kwargs) -> torch.Tensor:
    """fish-speech's ``generate`` for codebook models: prompt ``[rows, T]`` ->
    ``[rows, T + n]`` (``long_form.generate`` dispatches here). ``semantic_ids`` (as
    fish-speech's ``decode_n_tokens`` takes it through ``**sampling_kwargs``) defaults to
    the config's semantic range."""
    rows = _check_prompt(model, prompt)
    T = prompt.shape[1]
    new = _new_tokens(model, T, max_new_tokens)
    if semantic_ids is None:
        semantic_ids = model.config.semantic_ids()
    _check_semantic_ids(model, semantic_ids)
    end = _im_end_id(model, im_end_id)
    new_codes = torch.zeros((1, rows, max(new, PENALTY_WINDOW + 1)), dtype=torch.int64,
                            device=prompt.device)
    first_step = _default_step(model, agent=False)  # the prefill step: the model's own
    steps = PositionSteps(
        prefill=lambda m, x, pos: first_step(
            m, x, pos, **_step_kwargs(first_step, semantic_ids, sampling_kwargs)
        ).view(1, rows, 1),
        step=_single_row_step(model, decode_one_token, new_codes[..., 1:], semantic_ids,
                              sampling_kwargs))
    with decode_session(model, 1, T + new, prompt.device):  # the core's cache set-up
        n = sum(1 for _ in iter_positions(
            model, steps, prompt.view(1, rows, T), new, out=new_codes, stop_first=False,
            **_stop_at(end, prompt), new_probs=None, previous_tokens=None,
            logprobs_out=None, sampling_kwargs={}))
    return torch.cat([prompt.to(torch.int64), new_codes[0, :, :n]], dim=1)


@torch.no_grad()
def decode_n_tokens_agent(model, cur_token: torch.Tensor, input_pos: torch.Tensor,
                          num_new_tokens: int, semantic_ids: list, im_end_id: int = 4,
                          decode_one_token=decode_one_token_naive_agent,
                          early_stop_threshold: float = 0.6,
                          **sampling_kwargs) -> Iterator[torch.Tensor]:
    """Yields ``[B, rows, 1]`` per position after ``cur_token [B, rows, 1]``. A row that has
    produced ``im_end_id`` keeps producing it; decoding stops when every row has, or when
    ``round(B * early_stop_threshold)`` rows have (for a threshold strictly inside (0, 1))."""
    check_int("num_new_tokens", num_new_tokens, 0)
    check_range("early_stop_threshold", early_stop_threshold, 0.0, 1.0, lo_open=False,
                hi_open=False)
    im_end_id = as_token_id("im_end_id", im_end_id, model.config.vocab_size)
    _check_semantic_ids(model, semantic_ids)
    history = torch.zeros((cur_token.shape[0], model.config.num_codebooks + 1,
                           max(num_new_tokens, PENALTY_WINDOW)), dtype=torch.int64,
                          device=cur_token.device)
    position = _agent_step(decode_one_token, history, semantic_ids, sampling_kwargs)
    # rows that have produced im_end_id keep producing it (in every token row)
    for column in iter_decode_loop(model, cur_token, input_pos, num_new_tokens,
                                   step=position, out=history, done=None,
                                   **_agent_loop(im_end_id, early_stop_threshold, cur_token)):
        yield column.cpu()


def _agent_step(decode_one_token, history: torch.Tensor, semantic_ids,
                sampling_kwargs: dict) -> Callable:
    """The loop's step for batch-first codebook decoding, with the penalty window over
    ``history [B, rows, L]``."""
    return _windowed(history, lambda m, cur, pos, window: decode_one_token(
        m, cur, pos, semantic_ids, previous_tokens=window, **sampling_kwargs))


def _agent_loop(im_end_id: int, early_stop_threshold: float, like: torch.Tensor) -> dict:
    """The agent decodes' stopping: ``im_end_id`` ends a row (later positions repeat it in
    every token row); ``round(B * threshold)`` ended rows end the decode for a threshold
    strictly inside (0, 1)."""
    threshold = round(like.shape[0] * early_stop_threshold)
    enough = ((lambda done: int(done.sum()) >= threshold)
              if 0 < early_stop_threshold < 1 else None)
    return dict(stop_ids=torch.tensor([im_end_id], device=like.device), stop_rows=None,
                pad_id=im_end_id, enough=enough, new_probs=None, previous_tokens=None,
                logprobs_out=None, sampling_kwargs={})


@torch.no_grad()
def generate_agent(*, model, prompt: torch.Tensor, max_new_tokens: int, semantic_ids: list,
                   im_end_id: int = 4, decode_one_token=decode_one_token_naive_agent,
                   num_samples: int = 1, early_stop_threshold: float = 0.6,
                   **sampling_kwargs) -> Iterator[torch.Tensor]:
    """Generator: prompt ``[rows, T]`` is decoded as ``num_samples`` rows; yields
    ``[num_samples, rows, 1]`` for the first position (the prefill), then per position as
    ``decode_n_tokens_agent``. Holds the model's decode lock until it ends (or is closed):
    another thread's decode on the model waits, this thread's raises."""
    check_int("num_samples", num_samples, 1)
    rows = _check_prompt(model, prompt)
    check_range("early_stop_threshold", early_stop_threshold, 0.0, 1.0, lo_open=False,
                hi_open=False)
    im_end_id = as_token_id("im_end_id", im_end_id, model.config.vocab_size)
    _check_semantic_ids(model, semantic_ids)
    T = prompt.shape[1]
    new = _new_tokens(model, T, max_new_tokens)
    batch = prompt[None].repeat(num_samples, 1, 1)
    history = torch.zeros((num_samples, rows, max(new, PENALTY_WINDOW + 1)), dtype=torch.int64,
                          device=prompt.device)
    first_step = _default_step(model, agent=True)  # the prefill step: the model's own
    steps = PositionSteps(
        prefill=lambda m, x, pos: first_step(m, x, pos, semantic_ids, **sampling_kwargs
                                             ).view(num_samples, rows, 1),
        step=_agent_step(decode_one_token, history[..., 1:], semantic_ids, sampling_kwargs))
    # the core's cache set-up; the model stays this generator's until it ends or is closed
    with decode_session(model, num_samples, T + new, prompt.device):
        for column in iter_positions(model, steps, batch, new, out=history,
                                     **_agent_loop(im_end_id, early_stop_threshold, batch)):
            yield column.cpu()
