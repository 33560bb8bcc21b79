"""fish-speech's thread-safe request queue: one worker thread owns the model and
serves ``GenerateRequest``s; any number of client threads put requests on its input queue
and read ``WrappedGenerateResponse``s from their own response queues. The text queue
serves the requests waiting together (up to ``QUEUE_BATCH``): each advances to its next
segment, and all those segments decode in one batched run of the serving engine
(``engine.batch.complete_all``), each request's responses in its own order. A request with
``compile=True`` is served alone through its compiled ``decode`` step.

Request dicts for ``launch_thread_safe_queue`` take ``generate_long``'s keyword arguments
(``text`` required; ``model``/``decode_one_token`` are the worker's), so a request built as
fish-speech's API server builds it (``device``, ``compile``, ``prompt_tokens=[]``, ...)
is served unchanged; a ``device`` other than the worker's is an error response. Each chunk
arrives as ``WrappedGenerateResponse("success", GenerateResponse(...))``; a request that
raises gets one ``WrappedGenerateResponse("error", exception)`` and the worker moves on.
``None`` on the input queue stops the worker.

Response sinks: a response queue whose ``put`` raises (a closed ``multiprocessing.Queue``)
or stays full for ``RESPONSE_PUT_TIMEOUT_S`` seconds (a bounded queue its client stopped
reading) cancels that request alone: the worker drops it, logs a warning and serves the
next request. A sink whose ``put`` takes no ``timeout`` is called as ``put(item)``.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch

from ...cancel import cancel_on
from ...engine.batch import complete_all
from .long_form import (GenerateResponse, SegmentDecode, generate_long, load_model,
                        long_form_steps)
from ...validation import check_int

__all__ = ["WrappedGenerateResponse", "GenerateRequest", "launch_thread_safe_queue",
           "ResponseSinkError", "RESPONSE_PUT_TIMEOUT_S",
           "launch_thread_safe_queue_agent", "AGENT_REQUEST_KEYS",
           "CODEBOOK_AGENT_REQUEST_KEYS"]


# Seconds a response sink may stay full before its request is cancelled (docs/reliability.md).
RESPONSE_PUT_TIMEOUT_S = 5.0
# Text requests the queue takes at once: their segments decode together
QUEUE_BATCH = 8

_log = logging.getLogger("fastdecode.serving")


class ResponseSinkError(RuntimeError):
    """A request's response queue raised or stayed full: that request is cancelled."""


@functools.lru_cache(maxsize=None)
def _put_takes_timeout(sink_type: type) -> bool:
    """Whether ``sink_type.put`` takes a ``timeout`` (read once per type: every chunk of
    every request is delivered through it)."""
    try:
        return "timeout" in inspect.signature(sink_type.put).parameters
    except (TypeError, ValueError, AttributeError):  # a builtin without a signature
        return False


def _deliver(sink, item) -> None:
    """``sink.put(item)``, waiting at most ``RESPONSE_PUT_TIMEOUT_S`` when the sink takes a
    timeout; any failure (full, closed, raising) becomes ``ResponseSinkError``."""
    try:
        if _put_takes_timeout(type(sink)):
            sink.put(item, timeout=RESPONSE_PUT_TIMEOUT_S)
        else:
            sink.put(item)
    except Exception as e:
        reason = ("stayed full for %.0f s" % RESPONSE_PUT_TIMEOUT_S
                  if isinstance(e, queue.Full) else f"raised {type(e).__name__}: {e}")
        raise ResponseSinkError(f"the response queue {reason}; the request was cancelled") \
            from e


@dataclass
class WrappedGenerateResponse:
    status: Literal["success", "error"]
    response: Optional[Union[GenerateResponse, Exception]] = None


@dataclass
class GenerateRequest:
    request: dict
    response_queue: queue.Queue


_worker_ids = itertools.count()
# generate_long's keywords that a request may set (the rest belong to the worker)
_LONG_FORM_KEYS = frozenset(inspect.signature(generate_long).parameters) - {
    "model", "decode_one_token"}
# keys of an agent request: token ids in, token ids out (fastdecode.generate's knobs)
AGENT_REQUEST_KEYS = frozenset({"prompt", "max_new_tokens", "num_samples", "temperature",
                                "top_k", "top_p", "min_p", "repetition_penalty"})
# and for codebook models (DualAR / Naive): generate_agent's keywords
CODEBOOK_AGENT_REQUEST_KEYS = AGENT_REQUEST_KEYS | {"semantic_ids", "im_end_id",
                                                    "early_stop_threshold"}


def _check_keys(request, allowed) -> dict:
    if not isinstance(request, dict):
        raise TypeError(f"request must be a dict, got {type(request).__name__}")
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise TypeError(f"unknown request key(s) {unknown}; allowed: {sorted(allowed)}")
    return request


# Workers still running when the interpreter exits: (stop event, input queue) each.
_live_workers: set = set()
_live_lock = threading.Lock()


def _stop_workers_at_exit() -> None:
    """Runs before Python joins its threads at exit: every live worker drops the request it
    is decoding (its client gets a DecodeCancelled error response) and stops, so a script
    may end with queues still running and exit cleanly."""
    with _live_lock:
        workers = list(_live_workers)
    for stop, input_queue in workers:
        stop.set()
        input_queue.put(None)


if hasattr(threading, "_register_atexit"):  # before non-daemon threads are joined
    threading._register_atexit(_stop_workers_at_exit)
else:  # pragma: no cover (CPython < 3.9)
    import atexit
    atexit.register(_stop_workers_at_exit)


def _launch(load: Callable[[], object], serve: Callable[[object, dict, queue.Queue], None],
            name: str, serve_many: Optional[Callable] = None):
    """Start a worker that runs ``load()`` once, then ``serve(state, request, out)`` per
    request, or with ``serve_many``, ``serve_many(state, items, stop)`` on the items waiting
    together (up to ``QUEUE_BATCH``). Blocks until loading ends; a load failure is raised
    here, in the caller. ``None`` on the queue stops the worker after the requests before
    it; at interpreter exit it stops at once (``_stop_workers_at_exit``)."""
    input_queue: queue.Queue = queue.Queue()
    loaded = threading.Event()
    stop = threading.Event()
    failure: list = []
    state: list = []
    entry = (stop, input_queue)

    def worker():
        try:
            state.append(load())
        except BaseException as e:  # reported to the caller, who is waiting on `loaded`
            failure.append(e)
            with _live_lock:
                _live_workers.discard(entry)
            return
        finally:
            loaded.set()
        try:
            with cancel_on(stop):
                serve_forever()
        finally:
            with _live_lock:
                _live_workers.discard(entry)

    def serve_forever():
        if serve_many is not None:
            return serve_together()
        while True:
            item = input_queue.get()
            if item is None or stop.is_set():
                return
            _serve_item(serve, state[0], item)

    def serve_together():
        while True:
            items = [input_queue.get()]
            while items[-1] is not None and len(items) < QUEUE_BATCH:
                try:
                    items.append(input_queue.get_nowait())
                except queue.Empty:
                    break
            last = items[-1] is None
            if stop.is_set():
                return
            serve_many(state[0], [i for i in items if i is not None], stop)
            if last:
                return

    # not a daemon: a daemon thread killed inside torch at exit aborts the process
    thread = threading.Thread(target=worker, name=f"{name}-{next(_worker_ids)}")
    with _live_lock:
        _live_workers.add(entry)
    thread.start()
    loaded.wait()
    if failure:
        raise failure[0]
    input_queue.worker = thread  # for callers that want to join() after putting None
    return input_queue, state[0]


def launch_thread_safe_queue(checkpoint_path, device, precision, compile: bool = False
                             ) -> queue.Queue:
    """Load the model once in a worker thread and return its input queue (see module doc).
    Raises in the caller when the checkpoint cannot be loaded."""
    def serve(loaded, request, out):
        model, step = loaded
        kwargs = {"device": device, **_check_keys(request, _LONG_FORM_KEYS)}
        with torch.no_grad():
            for chunk in generate_long(model=model, decode_one_token=step, **kwargs):
                _deliver(out, WrappedGenerateResponse(status="success", response=chunk))

    def serve_many(loaded, items, stop):
        if hasattr(loaded[0].config, "num_codebooks"):  # codebook models: one at a time
            for item in items:
                _serve_item(serve, loaded, item)
            return
        _serve_text_together(loaded, items, stop, device, serve)

    q, _ = _launch(lambda: load_model(checkpoint_path, device, precision, compile), serve,
                   "fastdecode-queue", serve_many)
    return q


def _error_to(item, error: Exception) -> None:
    """Tell ``item``'s client about ``error`` (a sink that cannot be told: logged)."""
    if isinstance(error, ResponseSinkError):  # nobody can be told: drop the request
        _log.warning("%s", error)
        return
    # any object with put() serves (queue.Queue, multiprocessing queues, ...)
    target = getattr(item, "response_queue", None)
    if callable(getattr(target, "put", None)):
        try:
            _deliver(target, WrappedGenerateResponse(status="error", response=error))
        except ResponseSinkError as sink_error:
            _log.warning("%s (it carried: %r)", sink_error, error)


def _serve_item(serve, loaded, item) -> None:
    """One request through ``serve``, its failure as an error response."""
    try:
        if not isinstance(item, GenerateRequest):
            raise TypeError(f"queue items must be GenerateRequest or None, got "
                            f"{type(item).__name__}")
        serve(loaded, item.request, item.response_queue)
    except Exception as e:
        _error_to(item, e)


def _serve_text_together(loaded, items, stop: threading.Event, device, serve) -> None:
    """Text requests together: in rounds, each active request's ``long_form_steps`` run to
    its next segment (delivering its responses on the way), then every waiting segment
    decodes in one ``complete_all`` (the engine: one batched step per token). A request
    that fails, or whose sink fails, leaves the round alone; ``stop`` cancels them all."""
    model, _ = loaded
    active = []  # [item, steps, reply to send]
    for item in items:
        if not isinstance(item, GenerateRequest) or not isinstance(item.request, dict) or \
                item.request.get("compile") is True:
            _serve_item(serve, loaded, item)  # a compiled step: alone, through decode()
            continue
        try:
            kwargs = {"device": device, **_check_keys(item.request, _LONG_FORM_KEYS)}
            active.append([item, long_form_steps(model=model, **kwargs), None])
        except Exception as e:
            _error_to(item, e)
    while active:
        waiting = []  # (entry, SegmentDecode)
        for entry in list(active):
            item, steps = entry[0], entry[1]
            try:
                while True:
                    step, entry[2] = steps.send(entry[2]), None
                    if isinstance(step, SegmentDecode):
                        waiting.append((entry, step))
                        break
                    _deliver(item.response_queue, WrappedGenerateResponse("success", step))
            except StopIteration:
                active.remove(entry)
            except Exception as e:
                active.remove(entry)
                _error_to(item, e)
        if not waiting:
            continue
        try:
            with torch.no_grad():
                done = complete_all(model, model.tokenizer, [s.ids for _, s in waiting],
                                    [s.params.replace(max_tokens=s.budget) for _, s in waiting],
                                    [waiting[0][1].im_end], cancel=stop)
        except Exception as e:  # DecodeCancelled at exit, or a decode failure: all of them
            for entry in active:
                _error_to(entry[0], e)
            return
        for (entry, _), completion in zip(waiting, done):
            entry[2] = completion.token_ids


def launch_thread_safe_queue_agent(checkpoint_path, device, precision, compile: bool = False):
    """``(input_queue, tokenizer, config)`` for token-level clients ("agents").

    Requests: ``prompt`` (token ids ``[T]`` or ``[B, T]``, required), ``max_new_tokens``
    (default 256), ``num_samples`` (default 1) and the sampling knobs of
    ``fastdecode.generate``. Per sample the worker sends
    ``GenerateResponse("sample", codes [B, n], text)`` (generation stops at the chat end
    token) and then ``GenerateResponse("next")``.
    """
    from ..gpt_fast import generate

    def serve(loaded, request, out):
        model, step = loaded
        if hasattr(model.config, "num_codebooks"):
            return _serve_codebook_request(model, step, request, out, device)
        kwargs = dict(_check_keys(request, AGENT_REQUEST_KEYS))
        if "prompt" not in kwargs:
            raise TypeError("request needs 'prompt' (token ids [T] or [B, T])")
        prompt = torch.as_tensor(kwargs.pop("prompt"), device=device)
        max_new = kwargs.pop("max_new_tokens", 256)
        samples = kwargs.pop("num_samples", 1)
        check_int("num_samples", samples, 1)
        tok = model.tokenizer
        for _ in range(samples):
            seq, _ = generate(model, prompt, max_new, eos_id=tok.stop_ids, **kwargs)
            codes = seq[:, prompt.shape[-1]:]
            text = tok.decode(codes[0].tolist(), skip_special_tokens=True)
            _deliver(out, WrappedGenerateResponse("success",
                                                  GenerateResponse("sample", codes, text)))
            _deliver(out, WrappedGenerateResponse("success", GenerateResponse("next")))

    q, (model, _) = _launch(lambda: load_model(checkpoint_path, device, precision, compile,
                                               is_agent=True),
                            serve, "fastdecode-agent-queue")
    return q, model.tokenizer, model.config


def _serve_codebook_request(model, step, request, out, device) -> None:
    """A codebook model's request: ``prompt [rows, T]`` (required), ``semantic_ids``
    (default: the config's semantic range), ``im_end_id`` (default: the tokenizer's, else 4),
    ``max_new_tokens`` (default 256), ``num_samples``, ``early_stop_threshold`` and the
    sampling knobs. Streams ``GenerateResponse("sample", codes [num_samples, rows, 1])`` per
    position of ``generate_agent``, then ``GenerateResponse("next")``."""
    from .codebook_decode import generate_agent

    kwargs = dict(_check_keys(request, CODEBOOK_AGENT_REQUEST_KEYS))
    if "prompt" not in kwargs:
        raise TypeError("request needs 'prompt' (codes [num_codebooks + 1, T])")
    kwargs.setdefault("semantic_ids", model.config.semantic_ids())
    tok = getattr(model, "tokenizer", None)
    kwargs.setdefault("im_end_id", getattr(tok, "im_end_id", None) or 4)
    kwargs.setdefault("max_new_tokens", 256)
    prompt = torch.as_tensor(kwargs.pop("prompt"), device=device)
    for codes in generate_agent(model=model, prompt=prompt, decode_one_token=step, **kwargs):
        _deliver(out, WrappedGenerateResponse("success",
                                              GenerateResponse("sample", codes, None)))
    _deliver(out, WrappedGenerateResponse("success", GenerateResponse("next")))
