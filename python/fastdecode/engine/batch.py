"""Many prompts to completion on a transient engine: what ``LLM.generate`` runs for a list
of prompts (each prompt's choices decode together with every other prompt's, in one
batched step per token, instead of one prompt after another)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..cancel import DecodeCancelled
from ..params import SamplingParams
from .engine import Engine
from .request import ErrorEvent, FinishEvent, GenerationRequest, TokenEvent

__all__ = ["Completion", "complete_all", "ROWS"]

ROWS = 16  # rows decoded together (at most: fewer prompts, fewer rows)


@dataclass
class Completion:
    """One finished request: its ids (the end id, if any, excluded), text, finish reason,
    the chosen tokens' log-probabilities when asked, and the counts."""
    token_ids: List[int] = field(default_factory=list)
    text: str = ""
    finish_reason: Optional[str] = None
    logprobs: List[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def complete_all(model, tokenizer, prompts: Sequence[Sequence[int]],
                 params: Sequence[SamplingParams], end_ids: Sequence[int],
                 logprobs: bool = False, cancel: Optional[threading.Event] = None
                 ) -> List[Completion]:
    """Complete ``prompts[i]`` with ``params[i]`` (``max_tokens`` set), all on one engine
    sized for them; returns the completions in order. Raises the first request's error;
    ``DecodeCancelled`` once ``cancel`` is set (every request's slot freed at the engine's
    next step)."""
    ctx = max(len(p) + q.max_tokens for p, q in zip(prompts, params))
    results = [Completion(prompt_tokens=len(p)) for p in prompts]
    done = threading.Semaphore(0)
    errors: List[str] = []

    def sink_for(out: Completion):
        def sink(event) -> None:
            if isinstance(event, TokenEvent):
                if event.token_id not in end_ids:
                    out.token_ids.append(event.token_id)
                out.text += event.text
                if event.logprob is not None:
                    out.logprobs.append(event.logprob)
                return
            if isinstance(event, FinishEvent):
                out.text += event.text
                out.finish_reason = event.finish_reason
                out.completion_tokens = event.completion_tokens
            elif isinstance(event, ErrorEvent):
                errors.append(event.message)
            done.release()
        return sink

    with Engine(model, tokenizer, max_batch=min(len(prompts), ROWS), ctx=ctx,
                max_waiting=len(prompts)) as engine:
        handles = [engine.submit(GenerationRequest(tuple(prompt), p, tuple(end_ids),
                                                   0 if logprobs else None), sink_for(out))
                   for prompt, p, out in zip(prompts, params, results)]
        for _ in prompts:
            while not done.acquire(timeout=0.05 if cancel is not None else None):
                if cancel.is_set():
                    for handle in handles:
                        handle.cancel()
                    raise DecodeCancelled("the decode was cancelled")
    if errors:
        raise RuntimeError(errors[0])
    return results
