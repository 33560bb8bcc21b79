"""Requests run to completion on a transient engine: what ``LLM.generate`` runs (one
prompt's n choices, or a list of prompts) and gpt-fast's ``generate`` (a batch of prompt
rows): every request decodes together with the others, in one batched step per token,
instead of one prompt after another. Every request is queued before the engine starts, so
they are admitted in order whatever the threads' timing."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from ..cancel import DecodeCancelled, check_cancelled, current_cancel_event
from ..params import SamplingParams
from .engine import Engine
from .request import ErrorEvent, FinishEvent, GenerationRequest, TokenEvent

__all__ = ["Completion", "complete_all", "complete_rows", "ROWS"]

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


class _Run:
    """One transient engine run: the caller waits for each request's end; a client callback
    that raises (run through ``client``) cancels the run and is raised to the caller."""

    def __init__(self):
        self.done = threading.Semaphore(0)
        self.errors: List[str] = []
        self.raised: List[BaseException] = []

    def client(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except BaseException as e:  # the engine cancels this request: no more events
            self.raised.append(e)
            self.done.release()
            raise

    def ended(self, event) -> None:
        """A request's last event (finish or error)."""
        if isinstance(event, ErrorEvent):
            self.errors.append(event.message)
        self.done.release()

    def run(self, model, tokenizer, requests: Sequence[GenerationRequest], sinks: Sequence,
            cancel: Optional[threading.Event]) -> None:
        ctx = max(len(r.prompt_ids) + r.params.max_tokens for r in requests)
        engine = Engine(model, tokenizer, max_batch=min(len(requests), ROWS), ctx=ctx,
                        max_waiting=len(requests))
        try:
            handles = [engine.submit(r, sink) for r, sink in zip(requests, sinks)]
            engine.start()
            for _ in requests:
                while not self.done.acquire(timeout=0.05 if cancel is not None else None):
                    if cancel.is_set():
                        break
                if self.raised or (cancel is not None and cancel.is_set()):
                    for handle in handles:
                        handle.cancel()
                    if self.raised:
                        raise self.raised[0]
                    raise DecodeCancelled("the decode was cancelled")
        finally:
            engine.stop()
        if self.errors:
            raise RuntimeError(self.errors[0])


def complete_all(model, tokenizer, prompts: Sequence[Sequence[int]],
                 params: Sequence[SamplingParams], end_ids: Sequence[int],
                 logprobs: bool = False, cancel: Optional[threading.Event] = None,
                 on_text: Optional[Callable[[int, str], None]] = None) -> List[Completion]:
    """Complete ``prompts[i]`` with ``params[i]`` (``max_tokens`` set), all on one engine
    sized for them; returns the completions in order. Raises the first request's error;
    ``DecodeCancelled`` once ``cancel`` is set (every request's slot freed at the engine's
    next step). ``on_text(i, piece)`` gets request i's text as it is released (on the
    engine's thread); what it raises cancels the requests and is raised here."""
    results = [Completion(prompt_tokens=len(p)) for p in prompts]
    run = _Run()
    start = time.perf_counter()

    def sink_for(index: int, out: Completion):
        def text(piece: str) -> None:
            out.text += piece
            if on_text is not None and piece:
                run.client(on_text, index, piece)

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
            run.ended(event)
        return sink

    run.run(model, tokenizer,
            [GenerationRequest(tuple(prompt), p, tuple(end_ids), 0 if logprobs else None)
             for prompt, p in zip(prompts, params)],
            [sink_for(i, out) for i, out in enumerate(results)], cancel)
    return results


def complete_rows(model, rows: torch.Tensor, max_new_tokens: int, params: SamplingParams,
                  end_ids: Sequence[int], pad_id: int,
                  callback: Optional[Callable[[torch.Tensor], object]]) -> torch.Tensor:
    """gpt-fast's ``generate`` on the engine: each prompt row of ``rows [B, T]`` a request
    for ``max_new_tokens`` tokens with scalar ``params`` (row b seeded ``seed + b``; a
    ``generator`` is shared by the rows, drawn in the engine's fixed order); a row that
    produces an id of ``end_ids`` keeps it and is padded with ``pad_id`` after it. Returns
    ``seq [B, T + max_new_tokens]`` on ``rows``' device. ``callback`` gets each new column
    ``[B, 1]`` (``pad_id`` in rows that have ended) once every row has produced it, on the
    engine's thread (None: no columns are built); what it raises ends the call, and so does
    the event of a ``cancel_on`` block around it (``DecodeCancelled``)."""
    check_cancelled()
    cancel = current_cancel_event()  # cancel_on(event) around the call: DecodeCancelled
    B, T = rows.shape
    produced: List[List[int]] = [[] for _ in range(B)]
    ended = [False] * B
    columns = [0]  # columns handed to the callback
    run = _Run()

    def flush() -> None:
        """The callback for every column all rows have reached."""
        while columns[0] < max_new_tokens:
            if cancel is not None and cancel.is_set():
                return  # no column after the cancellation (the caller raises)
            i = columns[0]
            if not all(len(produced[b]) > i or ended[b] for b in range(B)):
                return
            if not any(len(produced[b]) > i for b in range(B)):
                return  # every row ended before this column
            columns[0] += 1
            column = [produced[b][i] if len(produced[b]) > i else pad_id for b in range(B)]
            run.client(callback, torch.tensor(column, dtype=torch.int64,
                                              device=rows.device).view(B, 1))

    def sink_for(b: int):
        def sink(event) -> None:
            if isinstance(event, TokenEvent):
                produced[b].append(event.token_id)
            else:
                ended[b] = True
            if callback is not None and not isinstance(event, ErrorEvent):
                flush()
            if not isinstance(event, TokenEvent):
                run.ended(event)
        return sink

    params = params.replace(max_tokens=max_new_tokens)
    prompts = rows.tolist()
    run.run(model, None,
            [GenerationRequest(tuple(prompts[b]), params.for_choice(b), tuple(end_ids))
             for b in range(B)], [sink_for(b) for b in range(B)], cancel)
    seq = torch.full((B, T + max_new_tokens), pad_id, dtype=torch.int64)
    seq[:, :T] = rows.cpu()
    for b, ids in enumerate(produced):
        seq[b, T:T + len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return seq.to(rows.device)
