"""What a client hands the serving engine and what it gets back.

A ``GenerationRequest`` is one completion: prompt ids, its ``SamplingParams`` (checked when
built; ``max_tokens`` required, ``stop`` strings matched on the text, ``seed`` giving the
request its own generator), the ids that end it (end of turn) and how many log-probability
alternatives to report. The engine answers through a sink, a callable run on the engine's
thread: ``TokenEvent`` per generated token, then one ``FinishEvent`` (or ``ErrorEvent``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from ..params import SamplingParams

__all__ = ["GenerationRequest", "TokenEvent", "FinishEvent", "ErrorEvent", "RequestHandle",
           "QueueFull", "Sink"]


@dataclass(frozen=True)
class GenerationRequest:
    """prompt_ids: the tokens to continue (at least one). params: sampling, ``max_tokens``
    (required) and ``stop`` strings. end_ids: tokens that end the completion with finish
    reason "stop" (their text is not part of the completion), ignored when ``ignore_eos``.
    top_logprobs: None (no log-probabilities) or k >= 0 (each token's log-probability under
    the model's unmodified softmax, and the k most likely alternatives)."""
    prompt_ids: Tuple[int, ...]
    params: SamplingParams
    end_ids: Tuple[int, ...] = ()
    top_logprobs: Optional[int] = None
    ignore_eos: bool = False

    def __post_init__(self):
        if self.params.max_tokens is None:
            raise ValueError("params.max_tokens must be set for a served request")
        if not self.prompt_ids:
            raise ValueError("the prompt must hold at least one token")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")


@dataclass
class TokenEvent:
    """One generated token: its id, the text it releases (may be empty: a character split
    over tokens, or text that could begin a stop string, is held back), and when asked its
    log-probability and the top alternatives ``[(id, logprob), ...]``."""
    token_id: int
    text: str
    logprob: Optional[float] = None
    top_logprobs: Optional[List[Tuple[int, float]]] = None


@dataclass
class FinishEvent:
    """The end: ``finish_reason`` "stop" (a stop string or an end id) or "length"
    (max_tokens, or the slot's context), the text still held back (released now), and the
    token counts."""
    finish_reason: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class ErrorEvent:
    message: str


Sink = Callable[[object], None]


class QueueFull(Exception):
    """The waiting queue holds ``max_waiting`` requests: try again later."""


@dataclass(eq=False)
class RequestHandle:
    """The client's side of a submitted request: ``cancel()`` frees its slot at the engine's
    next step (a client that went away costs at most one more step)."""
    request: GenerationRequest
    sink: Sink
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()
