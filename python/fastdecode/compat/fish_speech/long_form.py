"""fish-speech's long-form API on our model and sampling ops, for chat LLMs.

``generate_long`` splits a long text into segments (``segmentation.split_text``), sends each
as one user turn of a ChatML conversation and decodes the model's reply until
``<|im_end|>``. With ``iterative_prompt`` the conversation carries the earlier
(segment, reply) pairs: always the first, then as many recent ones as fit ``max_length``.

Also here, under fish-speech's names: ``load_model``, ``decode_one_token_naive``,
``decode_n_tokens`` and ``generate`` (keyword-only, returns one sequence tensor). All of them
run ``fastdecode.generate``'s decode core (``decode`` and its loop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Callable, Generator, Iterator, List, Literal, Optional, Sequence, Tuple,
                    Union)

import torch

from ...decode_core import (decode_loop, compile_decode_step, decode, decode_step_of,
                       prepare_prompt)
from ...dual_ar import CodebookModel
from ...model import Transformer
from ...params import SamplingParams
from ...segmentation import split_text
from ...validation import as_token_id, check_flag, check_int, check_range

__all__ = ["GenerateResponse", "generate_long", "load_model", "decode_one_token_naive",
           "decode_n_tokens", "generate", "build_prompt", "SYSTEM_PROMPT"]

SYSTEM_PROMPT = ("You are a helpful assistant. The user sends a long text one part at a time; "
                 "answer each part.")


@dataclass
class GenerateResponse:
    action: Literal["sample", "next"]
    codes: Optional[torch.Tensor] = None
    text: Optional[str] = None


def load_model(checkpoint_path, device, precision, compile: bool = False,
               is_agent: bool = False) -> Tuple[Transformer, Callable]:
    """``(model, decode_one_token)``; the tokenizer rides along as ``model.tokenizer`` (what
    ``generate_long`` reads). ``compile`` compiles the model's decode step
    (``compile_decode_step``), which ``decode_one_token_naive`` then runs."""
    from ...checkpoint import load
    from ...dual_ar_folder import is_codebook_checkpoint

    if is_codebook_checkpoint(checkpoint_path):
        return _load_codebook_model(checkpoint_path, device, precision, compile, is_agent)
    model, tokenizer = load(checkpoint_path, device=device, precision=precision)
    model.tokenizer = tokenizer
    if compile:
        compile_decode_step(model)
    return model, decode_one_token_naive


def _load_codebook_model(path, device, precision, compile: bool, is_agent: bool):
    """A fish-speech DualAR / Naive folder: the model (``model.tokenizer`` from its
    ``tokenizer.json`` when there is one, else None) and the step fish-speech pairs with it."""
    from pathlib import Path

    from . import codebook_decode as cd
    from ...dual_ar import DualARTransformer
    from ...dual_ar_folder import load_codebook_model
    from ...quantize import cast_float_tensors
    from ...tokenizer import Tokenizer

    if compile:
        raise ValueError("compile=True is not available for DualAR / Naive codebook models: "
                         "their steps already run the fused C++ decode step")
    model = cast_float_tensors(load_codebook_model(path).to(device), precision).eval()
    tok_file = Path(path) / "tokenizer.json"
    model.tokenizer = Tokenizer.from_file(str(tok_file)) if tok_file.is_file() else None
    if isinstance(model, DualARTransformer):
        return model, cd.decode_one_token_ar_agent if is_agent else cd.decode_one_token_ar
    return model, cd.decode_one_token_naive_agent if is_agent else decode_one_token_naive


def decode_one_token_naive(model: Transformer, x: torch.Tensor, input_pos: torch.Tensor,
                           previous_tokens: Optional[torch.Tensor] = None,
                           **sampling_kwargs) -> torch.Tensor:
    """One decode step: x ``[B, 1]`` at input_pos ``[1]`` -> next token ``[B, 1]`` (int32),
    through the model's decode step (compiled when ``compile_decode_step`` was called). For a
    ``NaiveTransformer`` (codebook model): x ``[1, rows, S]`` -> ``[rows, 1]``
    (``codebook_decode.decode_one_token_naive_codes``)."""
    if _is_codebook_model(model):
        from .codebook_decode import decode_one_token_naive_codes
        return decode_one_token_naive_codes(model, x, input_pos, previous_tokens,
                                            **sampling_kwargs)
    return decode_step_of(model)(model, x, input_pos, previous_tokens, **sampling_kwargs)[0]


def _is_codebook_model(model) -> bool:
    return isinstance(model, CodebookModel)


def decode_n_tokens(model: Transformer, cur_token: torch.Tensor, input_pos: torch.Tensor,
                    num_new_tokens: int, semantic_ids: Optional[list] = None,
                    decode_one_token: Callable = decode_one_token_naive,
                    im_end_id: Optional[int] = None, previous_tokens: Optional[torch.Tensor] = None,
                    **sampling_kwargs) -> torch.Tensor:
    """Up to ``num_new_tokens`` tokens after ``cur_token [B, 1]`` -> ``[B, n]`` int64.

    Stops once every row has produced ``im_end_id`` (included; rows that ended earlier are
    padded with it). ``semantic_ids`` exists for fish-speech's signature; text models have
    none, so it must be None. ``previous_tokens`` ``[B, T]`` (the prompt) joins the
    generated tokens for the repetition penalty. ``input_pos`` advances in place.
    Codebook models (DualAR / Naive): cur_token ``[1, rows, 1]`` -> ``[rows, n]``
    (``codebook_decode.decode_n_tokens_codes``).
    """
    if _is_codebook_model(model):
        from .codebook_decode import decode_n_tokens_codes
        step = None if decode_one_token is decode_one_token_naive else decode_one_token
        return decode_n_tokens_codes(model, cur_token, input_pos, num_new_tokens, semantic_ids,
                                     decode_one_token=step, im_end_id=im_end_id,
                                     **sampling_kwargs)
    if semantic_ids is not None:
        raise ValueError("semantic_ids must be None: fastdecode serves text models, which "
                         "have no semantic-token vocabulary")
    check_int("num_new_tokens", num_new_tokens, 0)
    bsz = cur_token.shape[0]
    params = SamplingParams.from_kwargs(sampling_kwargs, batch_size=bsz)
    # One fixed buffer: [previous tokens | cur | new tokens]. Slots not generated yet hold
    # cur, already a previous token: the penalty counts each distinct id once.
    before = [] if previous_tokens is None else [previous_tokens.to(torch.int64)]
    n_before = 0 if previous_tokens is None else previous_tokens.shape[1]
    history = torch.cat([*before, cur_token.to(torch.int64).expand(bsz, 1 + num_new_tokens)],
                        1)
    out = history[:, n_before + 1:]
    if im_end_id is not None:
        im_end_id = as_token_id("im_end_id", im_end_id, model.config.vocab_size)
    stop_ids = None if im_end_id is None else torch.tensor([im_end_id], device=cur_token.device)
    steps = decode_loop(model, cur_token, input_pos, num_new_tokens, lambda _: None,
                         step=decode_one_token, out=out, new_probs=None, stop_ids=stop_ids,
                         stop_rows=None, pad_id=im_end_id or 0, done=None,
                         previous_tokens=history if params.penalised else None,
                         logprobs_out=None, sampling_kwargs=params.knobs())
    return out[:, :steps]


@torch.no_grad()
def generate(*, model: Transformer, prompt: torch.Tensor, max_new_tokens: int,
             decode_one_token: Callable = decode_one_token_naive, im_end_id: Optional[int] = None,
             **sampling_kwargs) -> torch.Tensor:
    """fish-speech's ``generate``: prompt ``[T]`` -> ``[T + n]`` (``[B, T]`` -> ``[B, T + n]``),
    n <= max_new_tokens, stopping after ``im_end_id`` (rows that ended earlier are padded
    with it). The KV cache holds exactly ``T + max_new_tokens`` positions. Codebook models
    (DualAR / Naive): prompt ``[rows, T]`` -> ``[rows, T + n]``
    (``codebook_decode.generate_codes``; max_new_tokens 0 = up to max_seq_len)."""
    if _is_codebook_model(model):
        from .codebook_decode import generate_codes
        step = None if decode_one_token is decode_one_token_naive else decode_one_token
        return generate_codes(model=model, prompt=prompt, max_new_tokens=max_new_tokens,
                              decode_one_token=step, im_end_id=im_end_id, **sampling_kwargs)
    rows = prepare_prompt(model, prompt, None)
    params = SamplingParams.from_kwargs(sampling_kwargs, batch_size=rows.shape[0])
    return _generate_text(model, prompt, rows, max_new_tokens, decode_one_token, im_end_id,
                          params)


def _generate_text(model: Transformer, prompt: torch.Tensor, rows: torch.Tensor,
                   max_new_tokens: int, step: Callable, im_end_id: Optional[int],
                   params: SamplingParams) -> torch.Tensor:
    """``generate`` for a text model once its prompt rows and params are built."""
    check_int("max_new_tokens", max_new_tokens, 1)
    if im_end_id is not None:
        im_end_id = as_token_id("im_end_id", im_end_id, model.config.vocab_size)
    stop_ids = None if im_end_id is None else torch.tensor([im_end_id], device=rows.device)
    result = decode(model, rows, max_new_tokens, params=params, stop_ids=stop_ids, step=step)
    seq = result.seq[:, :result.prompt_len + result.steps]
    return seq[0] if prompt.dim() == 1 else seq


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_prompt(tokenizer, segment: str, history: Sequence[Tuple[str, str]],
                 references: Sequence[Tuple[str, str]], iterative_prompt: bool,
                 max_length: int, reserve: int) -> Tuple[List[int], int]:
    """Token ids of the conversation for ``segment``: system message, reference pairs, the
    history pairs that fit (first pair, then the most recent), the user turn.

    ``reserve`` positions are left free for the reply: the prompt has at most
    ``max_length - reserve`` tokens. Returns ``(ids, pairs kept)``; raises ValueError when
    even the minimal conversation does not fit.
    """
    def encode(pairs):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for user, assistant in [*references, *pairs]:
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": segment})
        return tokenizer.encode(tokenizer.apply_chat_template(messages))

    budget = max_length - reserve
    pairs = list(history) if iterative_prompt else []
    kept = pairs[:1]
    ids = encode(kept)
    if len(ids) > budget:
        raise ValueError(f"max_length ({max_length}) leaves no room: the system message, "
                         f"references{', first pair' if kept else ''} and this segment take "
                         f"{len(ids)} tokens and {reserve} are reserved for the reply; raise "
                         "max_length or lower chunk_length / max_new_tokens")
    # add recent pairs newest first while they fit
    recent: List[Tuple[str, str]] = []
    for pair in reversed(pairs[1:]):
        trial = encode(kept + [pair] + recent)
        if len(trial) > budget:
            break
        recent.insert(0, pair)
        ids = trial
    return ids, len(kept) + len(recent)


def _check_device(device, model: Transformer) -> None:
    """``device`` must name the device the model's weights are on ("cuda" matches any
    index)."""
    try:
        want = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must name a torch device, got {device!r}") from e
    have = model.tok_embeddings.device
    if want.type != have.type or (want.index is not None and want.index != (have.index or 0)):
        raise ValueError(f"device {str(want)!r} is not the model's device ({str(have)!r}): "
                         "the model generates where its weights are")


@dataclass
class SegmentDecode:
    """What ``long_form_steps`` asks its driver to decode: a segment's prompt ids, its reply
    budget, the sampling parameters and the end id. The driver sends back the reply's ids
    (without the end id)."""
    ids: List[int]
    budget: int
    params: SamplingParams
    im_end: int


def generate_long(*, model, device: Union[str, torch.device], decode_one_token: Callable,
                  text: str, num_samples: int = 1, max_new_tokens: int = 0, top_p: float = 0.7,
                  repetition_penalty: float = 1.5, temperature: float = 0.7,
                  compile: bool = False, iterative_prompt: bool = True, max_length: int = 2048,
                  chunk_length: int = 150, prompt_text: Optional[Union[str, List[str]]] = None,
                  prompt_tokens: Optional[Union[torch.Tensor, List[torch.Tensor]]] = None
                  ) -> Iterator[GenerateResponse]:
    """Reply to ``text`` segment by segment; a generator of ``GenerateResponse``.

    Yields ``GenerateResponse("sample", codes [n] int64, text)`` per segment (the reply's
    tokens without ``<|im_end|>``) and ``GenerateResponse("next")`` after each of the
    ``num_samples`` passes over the text. ``max_new_tokens = 0``: replies may use whatever
    room ``max_length`` leaves. ``prompt_text[i]`` / ``prompt_tokens[i]`` are reference
    (user, assistant) pairs placed before the conversation. Ranges (checked before any
    work): top_p (0, 1], repetition_penalty (0, 2), temperature (0, 2), max_length <= the
    model's block_size. ``model.tokenizer`` must be set (``load_model`` does it). Each
    segment decodes with ``decode`` (``decode_one_token`` its step); the request queue
    drives the same steps (``long_form_steps``) with many requests' segments batched.
    """
    steps = long_form_steps(model=model, device=device, text=text, num_samples=num_samples,
                            max_new_tokens=max_new_tokens, top_p=top_p,
                            repetition_penalty=repetition_penalty, temperature=temperature,
                            compile=compile, iterative_prompt=iterative_prompt,
                            max_length=max_length, chunk_length=chunk_length,
                            prompt_text=prompt_text, prompt_tokens=prompt_tokens)
    reply = None
    while True:
        try:
            item = steps.send(reply)
        except StopIteration:
            return
        reply = None
        if isinstance(item, SegmentDecode):
            if compile and getattr(model, "compiled_decode_step", None) is None:
                compile_decode_step(model)  # decode_one_token_naive runs it
            reply = decode_segment(model, item, decode_one_token)
        else:
            yield item


def decode_segment(model: Transformer, segment: SegmentDecode, step: Callable) -> List[int]:
    """One segment's reply ids (the end id dropped) through ``decode``."""
    prompt = torch.tensor(segment.ids, dtype=torch.int64, device=model.tok_embeddings.device)
    seq = _generate_text(model, prompt, prompt.view(1, -1), segment.budget, step,
                         segment.im_end, segment.params)
    codes = seq[len(segment.ids):].tolist()
    return codes[:-1] if codes and codes[-1] == segment.im_end else codes


def long_form_steps(*, model, device, text: str, num_samples: int = 1, max_new_tokens: int = 0,
                    top_p: float = 0.7, repetition_penalty: float = 1.5,
                    temperature: float = 0.7, compile: bool = False,
                    iterative_prompt: bool = True, max_length: int = 2048,
                    chunk_length: int = 150, prompt_text=None, prompt_tokens=None
                    ) -> Generator[Union[SegmentDecode, GenerateResponse], Optional[List[int]],
                                   None]:
    """``generate_long``'s conversation, without its decoding: yields a ``SegmentDecode``
    per segment (send back the reply's ids) and the ``GenerateResponse``s to deliver. Its
    arguments are checked at the first ``send(None)``, before any work."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_chatml", False):
        raise ValueError("model.tokenizer must be a ChatML tokenizer: load the model with "
                         "fastdecode.long_form.load_model or set model.tokenizer")
    _check_device(device, model)
    # fish-speech's documented ranges, tighter than the sampler's own (checked in C++)
    check_range("top_p", top_p, 0, 1, lo_open=True, hi_open=False)
    check_range("repetition_penalty", repetition_penalty, 0, 2, lo_open=True, hi_open=True)
    check_range("temperature", temperature, 0, 2, lo_open=True, hi_open=True)
    check_int("num_samples", num_samples, 1)
    check_int("max_new_tokens", max_new_tokens, 0)
    check_int("max_length", max_length, 1)
    check_flag("compile", compile)
    check_flag("iterative_prompt", iterative_prompt)
    if max_length > model.config.block_size:
        raise ValueError(f"max_length ({max_length}) exceeds the model's block_size "
                         f"({model.config.block_size})")
    segments = split_text(text, chunk_length)
    if not segments:
        raise ValueError("text must contain at least one non-space character")
    texts, tokens = _as_list(prompt_text), _as_list(prompt_tokens)
    if len(texts) != len(tokens):
        raise ValueError(f"prompt_text and prompt_tokens must pair up: got {len(texts)} texts "
                         f"and {len(tokens)} token tensors")
    references = [(t, tokenizer.decode(torch.as_tensor(ids).view(-1).tolist(),
                                       skip_special_tokens=True))
                  for t, ids in zip(texts, tokens)]
    im_end = tokenizer.im_end_id
    reserve = max_new_tokens if max_new_tokens > 0 else 1
    params = SamplingParams(temperature=float(temperature), top_p=float(top_p),
                            repetition_penalty=float(repetition_penalty))
    for _ in range(num_samples):
        history: List[Tuple[str, str]] = []
        for segment in segments:
            ids, _ = build_prompt(tokenizer, segment, history, references, iterative_prompt,
                                  max_length, reserve)
            budget = max_new_tokens if max_new_tokens > 0 else max_length - len(ids)
            codes = yield SegmentDecode(ids, budget, params, im_end)
            reply = tokenizer.decode(codes, skip_special_tokens=True)
            history.append((segment, reply))
            yield GenerateResponse(action="sample",
                                   codes=torch.tensor(codes, dtype=torch.int64, device=device),
                                   text=reply)
        yield GenerateResponse(action="next")
