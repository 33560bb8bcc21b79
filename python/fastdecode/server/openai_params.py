"""OpenAI request bodies (``/v1/completions``, ``/v1/chat/completions``) turned into engine
requests: every field checked by type and range, a bad one a 400 naming it, before anything
is queued.

Fields: model, prompt (a string, a list of strings, a list of token ids or a list of such
lists) or messages (system / user / assistant turns, text content), max_tokens or
max_completion_tokens, temperature, top_p, n, stop, seed, logprobs (completions: the number
of alternatives; chat: a flag with top_logprobs), stream, stream_options.include_usage,
user; extras top_k, min_p, repetition_penalty, ignore_eos. Other fields are ignored.
With a ``seed`` and ``n > 1``, choice j samples from ``seed + j`` (mod 2^64,
``SamplingParams.for_choice``): each choice is reproducible by itself, and choice 0 is what
the same request with ``n = 1`` gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from ..engine import GenerationRequest
from ..params import SamplingParams
from .errors import APIError

__all__ = ["Job", "parse_completion", "parse_chat", "MAX_N"]

MAX_N = 16          # choices per request
MAX_PROMPTS = 16    # prompts in one completions request
MAX_STOPS = 4       # stop strings (OpenAI's limit)
_U64 = 1 << 64


@dataclass
class Job:
    """What one HTTP request asks for: ``requests[p * n + j]`` is choice j of prompt p."""
    chat: bool
    prompts: List[List[int]]
    n: int
    requests: List[GenerationRequest]
    stream: bool
    include_usage: bool
    logprobs: bool


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def _get(body: dict, name: str, kind, default, check=None):
    """``body[name]`` of JSON type ``kind`` (null = default), range-checked by ``check``."""
    value = body.get(name)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (bool in kinds) != isinstance(value, bool) or not isinstance(value, kinds):
        names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
                 dict: "an object"}
        raise _bad(name, f"{name} must be {names[kinds[-1]]}, got {type(value).__name__}: "
                         f"{_short(value)}")
    if check is not None and not check(value):
        raise _bad(name, f"{name} is out of range: {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _token_list(value, vocab: int, param: str) -> Optional[List[int]]:
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool)
                                                 for t in value):
        bad = [t for t in value if not 0 <= t < vocab]
        if bad:
            raise _bad(param, f"{param} token ids must be in [0, {vocab}), got {bad[:3]}")
        return list(value)
    return None


def _prompts(body: dict, tokenizer, vocab: int) -> List[List[int]]:
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("prompt", "prompt is required")
    ids = _token_list(prompt, vocab, "prompt")
    if ids is not None:
        return [ids]
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and len(prompt) <= MAX_PROMPTS:
        items = prompt
    else:
        raise _bad("prompt", f"prompt must be a string, a list of at most {MAX_PROMPTS} "
                             f"strings or token id lists, or a list of token ids")
    out = []
    for item in items:
        ids = _token_list(item, vocab, "prompt")
        if ids is None:
            if not isinstance(item, str):
                raise _bad("prompt", f"each prompt must be a string or a list of token ids, "
                                     f"got {_short(item)}")
            ids = _encode(tokenizer, item, "prompt")
        out.append(ids)
    return out


def _encode(tokenizer, text: str, param: str) -> List[int]:
    try:
        ids = tokenizer.encode(text)
    except ValueError as e:  # lone surrogates and the like
        raise _bad(param, f"{param}: {e}")
    if not ids:
        raise _bad(param, f"{param} must encode to at least one token")
    return ids


def _messages(body: dict, tokenizer) -> List[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "messages must be a non-empty array of {role, content}")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant",
                                                            "developer"):
            raise _bad(f"messages[{i}]", f"messages[{i}] must be an object with a role of "
                                         f"system, developer, user or assistant")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise _bad(f"messages[{i}].content", "only text content parts are supported")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content", f"messages[{i}].content must be a string")
        role = "system" if m["role"] == "developer" else m["role"]
        turns.append({"role": role, "content": content})
    try:
        text = tokenizer.apply_chat_template(turns)
    except ValueError as e:
        raise _bad("messages", str(e))
    return _encode(tokenizer, text, "messages")


def _sampling(body: dict, max_tokens: int, seed: Optional[int]) -> SamplingParams:
    temperature = _get(body, "temperature", (int, float), 1.0, lambda v: 0 <= v <= 2)
    top_p = _get(body, "top_p", (int, float), 1.0, lambda v: 0 < v <= 1)
    top_k = _get(body, "top_k", int, None, lambda v: v >= -1)
    min_p = _get(body, "min_p", (int, float), 0.0, lambda v: 0 <= v < 1)
    penalty = _get(body, "repetition_penalty", (int, float), 1.0, lambda v: 0 < v <= 10)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(
            isinstance(s, str) and s for s in stop):
        raise _bad("stop", f"stop must be a non-empty string or up to {MAX_STOPS} of them")
    try:
        return SamplingParams(temperature=float(temperature),
                              top_k=None if top_k in (None, -1, 0) else top_k,
                              top_p=float(top_p), min_p=float(min_p),
                              repetition_penalty=float(penalty), seed=seed, stop=tuple(stop),
                              max_tokens=max_tokens)
    except ValueError as e:  # the C++ range check names the knob
        name = next((k for k in ("temperature", "top_k", "top_p", "min_p",
                                 "repetition_penalty", "seed") if k in str(e)), None)
        raise _bad(name, str(e))


def _job(body: dict, chat: bool, prompts: List[List[int]], end_ids, ctx: int) -> Job:
    n = _get(body, "n", int, 1, lambda v: 1 <= v <= MAX_N)
    if len(prompts) * n > MAX_N * 4:
        raise _bad("n", f"{len(prompts)} prompts x n = {n} is more than {MAX_N * 4} choices")
    stream = _get(body, "stream", bool, False)
    options = _get(body, "stream_options", dict, {})
    include_usage = _get(options, "include_usage", bool, False)
    _get(body, "user", str, None)
    ignore_eos = _get(body, "ignore_eos", bool, False)
    seed = _get(body, "seed", int, None, lambda v: 0 <= v < _U64)
    if chat:
        wants = _get(body, "logprobs", bool, False)
        top = _get(body, "top_logprobs", int, 0, lambda v: 0 <= v <= 20)
        if top and not wants:
            raise _bad("top_logprobs", "top_logprobs needs logprobs: true")
        top_logprobs = top if wants else None
    else:
        top_logprobs = _get(body, "logprobs", int, None, lambda v: 0 <= v <= 20)
    longest = max(len(p) for p in prompts)
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    default = ctx - longest if chat else 16
    max_tokens = _get(body, field, int, default, lambda v: v >= 1)
    if longest >= ctx or longest + max_tokens > ctx:
        param = ("messages" if chat else "prompt") if longest >= ctx else field
        raise APIError(400, f"the prompt ({longest} tokens) plus {field} ({max_tokens}) "
                            f"exceeds the context of {ctx} tokens", param=param,
                       code="context_length_exceeded")
    params = _sampling(body, max_tokens, seed)  # built and checked once
    choices = [params.for_choice(j) for j in range(n)]
    requests = [GenerationRequest(tuple(ids), choice, tuple(end_ids), top_logprobs,
                                  ignore_eos) for ids in prompts for choice in choices]
    return Job(chat, prompts, n, requests, stream, include_usage, top_logprobs is not None)


def parse_completion(body: dict, tokenizer, vocab: int, ctx: int) -> Job:
    return _job(body, False, _prompts(body, tokenizer, vocab), tokenizer.stop_ids, ctx)


def parse_chat(body: dict, tokenizer, vocab: int, ctx: int) -> Job:
    return _job(body, True, [_messages(body, tokenizer)], tokenizer.stop_ids, ctx)
