"""Many prompts to completion on a transient engine: what ``LLM.generate`` runs (one prompt's
n choices, or a list of prompts: every choice of every prompt decodes together, in one
batched step per token, instead of one prompt after another)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from ..cancel import DecodeCancelled
from ..params import SamplingParams
from .engine import Engine
from .request import ErrorEvent, FinishEvent, GenerationRequest, TokenEvent

__all__ = ["Completion", "complete_all", "ROWS"]

ROWS = 16  # rows decoded together (at most: fewer prompts, fewer rows)


@dataclass
class Completion:
    """One finished request: its ids (the end id, if any, excluded), text, finish reason,
    the chosen tokens' log-probabilities when asked (one per id), the counts, and the
    seconds from the call to its first token and to its end."""
    token_ids: List[int] = field(default_factory=list)
    text: str = ""
    finish_reason: Optional[str] = None
    logprobs: List[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_seconds: float = 0.0
    seconds: float = 0.0


def complete_all(model, tokenizer, prompts: Sequence[Sequence[int]],
                 params: Sequence[SamplingParams], end_ids: Sequence[int],
                 logprobs: bool = False, cancel: Optional[threading.Event] = None,
                 on_text: Optional[Callable[[int, str], None]] = None) -> List[Completion]:
    """Complete ``prompts[i]`` with ``params[i]`` (``max_tokens`` set), all on one engine
    sized for them; returns the completions in order. Every request is queued before the
    engine starts, so they are admitted in order whatever the threads' timing. Raises the
    first request's error; ``DecodeCancelled`` once ``cancel`` is set (every request's slot
    freed at the engine's next step). ``on_text(i, piece)`` gets request i's text as it is
    released (on the engine's thread); what it raises cancels the requests and is raised
    here."""
    ctx = max(len(p) + q.max_tokens for p, q in zip(prompts, params))
    results = [Completion(prompt_tokens=len(p)) for p in prompts]
    done = threading.Semaphore(0)
    errors: List[str] = []
    raised: List[BaseException] = []
    start = time.perf_counter()

    def sink_for(index: int, out: Completion):
        def text(piece: str) -> None:
            out.text += piece
            if on_text is not None and piece:
                try:
                    on_text(index, piece)
                except BaseException as e:  # the engine cancels this request: no more events
                    raised.append(e)
                    done.release()
                    raise

        def sink(event) -> None:
            if isinstance(event, TokenEvent):
                if out.first_token_seconds == 0.0:
                    out.first_token_seconds = time.perf_counter() - start
                if event.token_id not in end_ids:
                    out.token_ids.append(event.token_id)
                    if event.logprob is not None:
                        out.logprobs.append(event.logprob)
                text(event.text)
                return
            out.seconds = time.perf_counter() - start
            if isinstance(event, FinishEvent):
                out.finish_reason = event.finish_reason
                out.completion_tokens = event.completion_tokens
                text(event.text)
            elif isinstance(event, ErrorEvent):
                errors.append(event.message)
            done.release()
        return sink

    engine = Engine(model, tokenizer, max_batch=min(len(prompts), ROWS), ctx=ctx,
                    max_waiting=len(prompts))
    try:
        handles = [engine.submit(GenerationRequest(tuple(prompt), p, tuple(end_ids),
                                                   0 if logprobs else None),
                                 sink_for(i, out))
                   for i, (prompt, p, out) in enumerate(zip(prompts, params, results))]
        engine.start()
        for _ in prompts:
            while not done.acquire(timeout=0.05 if cancel is not None else None):
                if cancel.is_set():
                    for handle in handles:
                        handle.cancel()
                    raise DecodeCancelled("the decode was cancelled")
            if raised:
                for handle in handles:
                    handle.cancel()
                raise raised[0]
    finally:
        engine.stop()
    if errors:
        raise RuntimeError(errors[0])
    return results
