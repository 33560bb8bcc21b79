"""gpt-fast's API (seed 004): ``generate(model, prompt, max_new_tokens, batch_size, *,
interactive, draft_model, speculate_k, callback, **sampling_kwargs)`` and
``decode_n_tokens``, as thin translations onto the decode core (``decode_core``): its
``**sampling_kwargs`` (``top_k`` 0 or None = off) become one ``SamplingParams``."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..decode_core import decode, decode_loop, decode_step_of, prepare_prompt
from ..decode_inputs import check_cache_room, check_token_ids, stop_ids_tensor
from ..engine.batch import complete_rows
from ..model import Transformer
from ..params import SamplingParams
from ..validation import check_int

__all__ = ["generate", "decode_n_tokens"]


def decode_n_tokens(model: Transformer, cur_token: torch.Tensor, input_pos: torch.Tensor,
                    num_new_tokens: int, callback: Callable = lambda _: _, *,
                    out: Optional[torch.Tensor] = None, stop_ids: Optional[torch.Tensor] = None,
                    pad_id: int = 0, done: Optional[torch.Tensor] = None,
                    previous_tokens: Optional[torch.Tensor] = None,
                    step: Optional[Callable] = None,
                    **sampling_kwargs) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Decode ``num_new_tokens`` tokens after ``cur_token [B, 1]`` at ``input_pos [1]``
    (gpt-fast's ``decode_n_tokens``).

    Returns gpt-fast's ``(new_tokens, new_probs)`` lists (``[B, 1]`` and ``[B, V]`` each).
    With ``out`` ``[B, >= num_new_tokens]`` the tokens are written there instead and the
    lists stay empty. With ``stop_ids``, rows whose last token was a stop id (or that are
    already ``done`` ``[B]``) get ``pad_id``; decoding ends early once every row is done.
    ``input_pos`` is advanced in place. ``previous_tokens`` (a fixed-shape buffer, typically
    the ``seq`` that ``out`` is a view of) is passed to every step for the repetition penalty.
    ``step`` replaces the model's decode step (``decode_step_of``).
    """
    listing = out is None
    if listing:
        out = torch.empty((cur_token.shape[0], num_new_tokens), dtype=torch.int64,
                          device=cur_token.device)
    new_probs: Optional[List[torch.Tensor]] = [] if listing else None
    steps = decode_loop(model, cur_token, input_pos, num_new_tokens, callback,
                         step=step or decode_step_of(model), out=out, new_probs=new_probs,
                         stop_ids=stop_ids, stop_rows=None, pad_id=pad_id, done=done,
                         previous_tokens=previous_tokens, logprobs_out=None,
                         sampling_kwargs=sampling_kwargs)
    if not listing:
        return [], []
    return [out[:, i:i + 1] for i in range(steps)], new_probs


def _no_callback(x):  # generate's default callback (gpt-fast's identity lambda)
    return x


@torch.no_grad()
def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int,
             batch_size: Optional[int] = None, *, interactive: bool = False,
             draft_model: Optional[Transformer] = None, speculate_k: int = 8,
             callback: Callable = _no_callback, eos_id: Union[None, int, Sequence[int]] = None,
             pad_id: Optional[int] = None, params: Optional[SamplingParams] = None,
             **sampling_kwargs) -> Tuple[torch.Tensor, Dict[str, list]]:
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
    params: a ``SamplingParams`` instead of the sampling keywords (without stop strings:
    ``eos_id`` gives stop ids here).

    Returns ``(seq [B, T + max_new_tokens] int64, {"accept_counts": [...]})``;
    ``accept_counts[a]`` (length ``speculate_k + 1``) counts the (row, round) pairs that
    accepted ``a`` draft tokens; all zero without a draft.
    """
    check_int("max_new_tokens", max_new_tokens, 1)
    check_int("speculate_k", speculate_k, 0)
    rows = prepare_prompt(model, prompt, batch_size)
    if params is None:
        params = SamplingParams.from_kwargs(sampling_kwargs, batch_size=rows.shape[0])
    elif sampling_kwargs:
        raise TypeError(f"pass params or sampling keywords, not both (got params and "
                        f"{sorted(sampling_kwargs)})")
    elif params.stop or params.max_tokens not in (None, max_new_tokens):
        raise ValueError("generate takes token ids: stop strings need LLM.complete (use "
                         "eos_id for stop ids), and params.max_tokens must be None or "
                         f"max_new_tokens ({max_new_tokens})")
    stop_ids = stop_ids_tensor(eos_id, model.config.vocab_size, rows.device)
    if _on_the_engine(model, params, draft_model, speculate_k, interactive):
        check_cache_room(model, rows.shape[1], max_new_tokens, interactive)
        pad_id = check_token_ids(model, stop_ids, pad_id)
        end_ids = [] if stop_ids is None else stop_ids.tolist()
        seq = complete_rows(model, rows, max_new_tokens, params, end_ids, pad_id,
                            None if callback is _no_callback else callback)
        return seq, {"accept_counts": [0] * (speculate_k + 1)}
    result = decode(model, rows, max_new_tokens, params=params,
                    interactive=interactive, draft_model=draft_model, speculate_k=speculate_k,
                    callback=callback, stop_ids=stop_ids, pad_id=pad_id)
    return result.seq, {"accept_counts": result.accept_counts}


def _on_the_engine(model: Transformer, params: SamplingParams,
                   draft_model: Optional[Transformer], speculate_k: int,
                   interactive: bool) -> bool:
    """Whether ``generate`` runs on the serving engine (each prompt row a request): plain
    decoding with one value per knob. Speculative rounds, a compiled step (it draws from the
    global generator), per-row knob tensors, the interactive cache and a tensor-parallel
    model (its ranks step in lockstep) run ``decode``."""
    return ((draft_model is None or speculate_k == 0) and not interactive
            and params.rows is None
            and getattr(model, "compiled_decode_step", None) is None
            and getattr(model, "tp_plan", None) is None)
