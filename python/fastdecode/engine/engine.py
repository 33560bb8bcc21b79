"""The continuous-batching engine: one thread owns the model and decodes every running
request together, one token each per step (iteration-level scheduling, as Orca, OSDI'22).

Each iteration:
1. requests whose client cancelled are ended (their slot is free for this very step);
2. prompts are read, at most one chunk's worth of positions (``model.prefill_chunk()``)
   an iteration: while slots are free, the oldest waiting request takes one (the free row
   with the longest cached prefix of its prompt, or a copy of a running row's longer one:
   ``SlotTable.acquire``) and its prompt is prefilled chunk by chunk (each chunk the one
   ``decode`` would read) as long as the iteration's budget holds the next chunk (the first
   chunk of an iteration always runs). So a long prompt holds the running streams back by
   one chunk per step, never for the whole prompt, and requests arriving together with
   short prompts are all read before the next step (they join one batch at once instead of
   one a step); a request's first token is sampled when its last chunk is read, or, when
   all its prompt but the last token was cached, in the step that reads that token;
3. one decode step for all decoding rows: tokens ``[B, 1]`` at per-row positions
   ``[B, 1]``, one call of the model (the fused C++ step), then each row sampled with its
   own parameters and generator; the rows that end (an end id, a stop string, max_tokens,
   its context) free their slots at once, the highest row first (a freed row below the
   last decoding row costs a copy of the last row's keys and values into it).

A request's tokens depend only on its prompt, parameters and seed: every kernel computes a
row from that row alone (docs/serving.md), each request has its own generator, and its
prompt is read alone in its own row.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Deque, List, Optional

import torch

from ..decode_lock import decoding_here, take
from ..detokenize import TextOutput
from ..sampling import sample
from .request import (ErrorEvent, FinishEvent, GenerationRequest, QueueFull, RequestHandle,
                      Sink, TokenEvent)
from .slots import SlotTable

__all__ = ["Engine", "EngineMetrics", "check_engine_sizes", "MAX_BATCH"]

log = logging.getLogger("fastdecode.engine")


class EngineMetrics:
    """Hooks the engine calls on its thread (the server's Prometheus metrics implement
    them); the defaults do nothing."""

    def step(self, batch: int, max_batch: int) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def next_token(self, seconds: float) -> None: ...

    def tokens(self, count: int) -> None: ...

    def queue(self, running: int, waiting: int) -> None: ...


class _IdsOnly:
    """A request's output on an engine without a tokenizer (token ids in and out: gpt-fast's
    ``generate``): no text, no stop strings."""
    stopped = False

    def push(self, token_id: int) -> str:
        return ""

    def finish(self) -> str:
        return ""


@dataclass(eq=False)
class _Sequence:
    handle: RequestHandle
    prompt: List[int]
    output: TextOutput
    knobs: dict                  # the sampler's keywords, with this request's generator
    # ids the repetition penalty reads ([1, prompt + max_tokens], None without a penalty):
    # positions not generated yet hold the first prompt id, already among them (decode's
    # fixed-shape buffer), so each step writes one id instead of building a tensor
    history: Optional[torch.Tensor]
    argmax: bool                 # greedy, no penalty: picked with the other such rows
    submitted: float
    row: int = -1
    fed: int = 0                 # tokens whose keys and values are in the row
    reused: int = 0              # of them, taken from a cached prefix
    last_token: int = -1         # sampled, not fed yet
    generated: List[int] = field(default_factory=list)
    last_time: float = 0.0

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


MAX_BATCH = 32  # rows of a step: the quantized linears keep their per-row GEMV up to 32


def check_engine_sizes(max_batch: int, ctx: int, max_waiting: int,
                       block_size: Optional[int] = None) -> None:
    """``ValueError`` naming the size out of range; ``serve`` calls it before loading the
    model (when ``block_size``, the model's context, is not known yet)."""
    for name, value, lo, hi in (("max_batch", max_batch, 1, MAX_BATCH),
                                ("ctx", ctx, 2, block_size or 1 << 40),
                                ("max_waiting", max_waiting, 0, 1 << 20)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


class Engine:
    """Serve ``model`` to many clients at once: ``submit`` a ``GenerationRequest`` with a
    sink; ``start()`` runs the loop on its own thread, ``stop()`` ends it (the requests still
    running get an ``ErrorEvent``).

    tokenizer: gives each request its text and stop strings; None for token ids only.
    max_batch: rows decoded together (KV slots, <= 32). ctx: positions per slot (a prompt
    plus its max_tokens must fit). max_waiting: requests queued for a slot before ``submit``
    raises ``QueueFull``. huge_pages: the KV caches on 2 MiB pages
    (``setup_caches(..., huge_pages=True)``), for a long-lived engine (the server's): the
    kernel takes ~0.55 s to assemble 377 MB of them, which the engines ``LLM.generate``
    makes per call would pay each time. The caches take the model's ``kv_cache_dtype`` (the
    server sets fp16).
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 8, ctx: int = 2048,
                 max_waiting: int = 64, metrics: Optional[EngineMetrics] = None,
                 huge_pages: bool = False):
        check_engine_sizes(max_batch, ctx, max_waiting, model.config.block_size)
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.ctx, self.max_waiting = max_batch, ctx, max_waiting
        self.metrics = metrics or EngineMetrics()
        self.device = model.tok_embeddings.device
        # the model is the engine's until stop(): another thread's decode waits, one from
        # the engine's thread (a sink calling generate) raises ReentrantDecodeError
        self._release_model = take(model)
        try:
            model.setup_caches(max_batch, ctx, huge_pages=huge_pages)  # memory check first
        except BaseException:
            self._release_model()
            raise
        self.slots = SlotTable(model, max_batch)
        self._waiting: Deque[_Sequence] = collections.deque()
        self._decoding: List[_Sequence] = []  # row order: _decoding[r].row == r
        self._prefilling: Optional[_Sequence] = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.steps = 0

    # -- the client side ------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> RequestHandle:
        """Queue ``request``; its events go to ``sink``. ``ValueError`` when the prompt and
        max_tokens exceed a slot's context or an id is outside the vocabulary;
        ``QueueFull`` when ``max_waiting`` requests are waiting."""
        vocab = self.model.config.vocab_size
        prompt = list(request.prompt_ids)
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        need = len(prompt) + request.params.max_tokens
        if need > self.ctx:
            raise ValueError(f"the prompt ({len(prompt)} tokens) plus max_tokens "
                             f"({request.params.max_tokens}) exceeds the context of "
                             f"{self.ctx} tokens")
        handle = RequestHandle(request, sink)
        params = request.params
        history = None
        if params.penalised:
            history = torch.full((1, need), prompt[0], dtype=torch.int64, device=self.device)
            history[0, :len(prompt)] = torch.tensor(prompt, dtype=torch.int64)
        if self.tokenizer is None and params.stop:
            raise ValueError("stop strings need an engine with a tokenizer")
        output = _IdsOnly() if self.tokenizer is None else TextOutput(self.tokenizer, params.stop)
        seq = _Sequence(handle, prompt, output,
                        params.with_generator(self.device).knobs(), history,
                        params.greedy and not params.penalised, time.perf_counter())
        with self._cond:
            if self._stopping:
                raise RuntimeError("the engine is stopped")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting for a slot")
            self._waiting.append(seq)
            self._cond.notify()
        return handle

    @property
    def running(self) -> int:
        return len(self._decoding) + (self._prefilling is not None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Engine":
        self._thread = threading.Thread(target=self._run, name="fastdecode-engine",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """End the loop (running and waiting requests get an ``ErrorEvent``) and give the
        model back."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._release_model()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.no_grad(), decoding_here(self.model):
            while True:
                with self._cond:
                    while not (self._stopping or self._waiting or self._decoding
                               or self._prefilling):
                        self._cond.wait()
                    if self._stopping:
                        break
                try:
                    self._iteration()
                except Exception as e:  # a bug must not take the server down silently
                    log.exception("engine iteration failed")
                    for seq in list(self._decoding) + [self._prefilling]:
                        if seq is not None:
                            self._end(seq, error=f"internal error: {type(e).__name__}: {e}")
        for seq in list(self._decoding) + [self._prefilling] + list(self._waiting):
            if seq is not None:
                self._emit(seq, ErrorEvent("the server is shutting down"))

    def _iteration(self) -> None:
        for seq in [s for s in self._decoding if s.handle.cancelled.is_set()]:
            self._end(seq, cancelled=True)
        if self._prefilling is not None and self._prefilling.handle.cancelled.is_set():
            self._end(self._prefilling, cancelled=True)
        budget = self.model.prefill_chunk()  # prompt positions read this iteration
        read = 0
        while True:
            if self._prefilling is None:
                self._admit()
            seq = self._prefilling
            if seq is None:
                break
            if seq.fed == len(seq.prompt) - 1:  # all but the last token cached: no prefill
                self._start_decoding(seq, seq.prompt[-1])
                continue
            end = self._chunk_end(seq)
            if read and read + end - seq.fed > budget:
                break
            read += end - seq.fed
            self._prefill_chunk(seq, end)
        if self._decoding:
            self._decode_step()
        self.metrics.queue(self.running, self.waiting)

    def _admit(self) -> None:
        with self._cond:
            while self._waiting and self._waiting[0].handle.cancelled.is_set():
                self._waiting.popleft()
            if not self._waiting or self.slots.free == 0:
                return
            seq = self._waiting.popleft()
        row, reused = self.slots.acquire(seq, seq.prompt)
        seq.fed = seq.reused = reused
        self._prefilling = seq

    def _chunk_end(self, seq: _Sequence) -> int:
        """Where ``seq``'s next prompt chunk ends: chunks are aligned to position 0, as a
        single decode reads a prompt (the same chunks give the same keys and values)."""
        chunk = self.model.prefill_chunk()
        return min(len(seq.prompt), (seq.fed // chunk + 1) * chunk)

    def _prefill_chunk(self, seq: _Sequence, end: int) -> None:
        """``seq``'s prompt up to ``end`` (its next chunk, ``_chunk_end``) into its row; after
        the last chunk, its first token."""
        ids = torch.tensor([seq.prompt[seq.fed:end]], dtype=torch.int64, device=self.device)
        last = end == len(seq.prompt)
        with self.slots.row_view(seq.row):
            # (a chunk before the last only fills the cache: no head)
            logits = self.model(ids, torch.arange(seq.fed, end, device=self.device),
                                last_only=last, head=last)
        self.slots.tokens[seq.row].extend(seq.prompt[seq.fed:end])
        seq.fed = end
        if not last:
            return
        self._start_decoding(seq, None)
        reason = self._accept(seq, self._draw(seq, logits[0, -1]), logits[0, -1])
        if reason:
            self._end(seq, reason=reason)

    def _start_decoding(self, seq: _Sequence, unread: Optional[int]) -> None:
        """The prefilling ``seq`` joins the decoding rows. unread: its last prompt token when
        every other one is cached; the next step reads it and samples the first token (the
        fused step computes a row as a one-token prefill of it does), so such requests
        arriving together cost no call of their own."""
        self._prefilling = None
        self.slots.prefilled()
        self._decoding.append(seq)
        assert seq.row == len(self._decoding) - 1
        if unread is not None:
            seq.last_token = unread

    def _decode_step(self) -> None:
        rows = list(self._decoding)  # the step's row order (ending rows reorder _decoding)
        x = torch.tensor([[s.last_token] for s in rows], dtype=torch.int64, device=self.device)
        pos = torch.tensor([[s.fed] for s in rows], dtype=torch.int64, device=self.device)
        logits, greedy = self.model.logits_and_greedy(x, pos)  # one C++ call when fused
        logits, greedy = logits[:, -1], greedy[:, -1]  # [B, V], [B]
        self.steps += 1
        self.metrics.step(len(rows), self.max_batch)
        for s in rows:
            self.slots.tokens[s.row].append(s.last_token)
            s.fed += 1
        tokens = self._draw_rows(rows, logits, greedy)
        ended = []
        for i, (s, token) in enumerate(zip(rows, tokens)):
            reason = self._accept(s, token, logits[i])
            if reason:
                ended.append((s, reason))
        # the highest row first: ending the last decoding row moves nothing, so the rows
        # that end together cost a copy only where a lower row is left free
        for s, reason in sorted(ended, key=lambda e: -e[0].row):
            self._end(s, reason=reason)

    # -- sampling -------------------------------------------------------------------------
    def _draw(self, seq: _Sequence, logits: torch.Tensor) -> int:
        """One row's token, as a single decode draws it: its knobs, its generator."""
        return int(sample(logits[None], seq.history, **seq.knobs)[0])

    def _draw_rows(self, rows: List[_Sequence], logits: torch.Tensor,
                   greedy: torch.Tensor) -> List[int]:
        """Greedy rows without a penalty take the step's greedy token (``greedy [B]``, each
        row's first maximum: the token a one-hot at temperature 0 gives, without building
        the one-hot); every other row is drawn alone with its own generator."""
        tokens = greedy.tolist()
        for i, s in enumerate(rows):
            if not s.argmax:
                tokens[i] = self._draw(s, logits[i])
            elif tokens[i] < 0:  # as argmax_token refuses it
                raise ValueError(f"the logits of row {i} contain NaN")
        return tokens

    # -- one token in, a request out ------------------------------------------------------
    def _accept(self, seq: _Sequence, token: int, logits: torch.Tensor) -> Optional[str]:
        """Take ``token`` as ``seq``'s next and send its event; the finish reason when it
        ends the request (the caller frees the row), else None."""
        now = time.perf_counter()
        if not seq.generated:
            self.metrics.first_token(now - seq.submitted)
        else:
            self.metrics.next_token(now - seq.last_time)
        seq.last_time = now
        self.metrics.tokens(1)
        req = seq.request
        seq.generated.append(token)
        seq.last_token = token
        if seq.history is not None:
            seq.history[0, len(seq.prompt) + len(seq.generated) - 1] = token
        ended_by_id = token in req.end_ids and not req.ignore_eos
        event = TokenEvent(token, "" if ended_by_id else seq.output.push(token))
        if req.top_logprobs is not None:
            logp = torch.log_softmax(logits.float(), dim=-1)
            event.logprob = float(logp[token])
            if req.top_logprobs:
                top = torch.topk(logp, req.top_logprobs)
                event.top_logprobs = list(zip(top.indices.tolist(), top.values.tolist()))
        if not self._emit(seq, event):
            return None  # (cancelled: its row is free already)
        if ended_by_id or seq.output.stopped:
            return "stop"
        if len(seq.generated) >= req.params.max_tokens:  # (submit kept it within ctx)
            return "length"
        return None

    def _emit(self, seq: _Sequence, event) -> bool:
        """Hand ``event`` to the request's sink; a sink that raises cancels the request."""
        try:
            seq.handle.sink(event)
            return True
        except Exception:
            log.exception("a response sink raised: its request is cancelled")
            if not isinstance(event, (FinishEvent, ErrorEvent)):
                self._end(seq, cancelled=True)
            return False

    def _end(self, seq: _Sequence, reason: str = "", cancelled: bool = False,
             error: str = "") -> None:
        """Free ``seq``'s slot and send its last event (none to a cancelled request)."""
        if seq.row >= 0 and (seq in self._decoding or seq is self._prefilling):
            if seq is self._prefilling:
                self._prefilling = None
            else:
                self._decoding.remove(seq)
            self.slots.release(seq.row)
            self._decoding.sort(key=lambda s: s.row)
            seq.row = -1
        else:
            return
        if error:
            self._emit(seq, ErrorEvent(error))
        elif not cancelled:
            self._emit(seq, FinishEvent(reason, seq.output.finish(), len(seq.prompt),
                                        len(seq.generated), seq.reused))
