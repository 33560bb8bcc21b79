"""The OpenAI-compatible HTTP API on the engine (FastAPI): ``/v1/completions``,
``/v1/chat/completions`` (plain and server-sent events), ``/v1/models``, ``/health``
(503 while the model loads) and ``/metrics`` (Prometheus). Every error is OpenAI's shape;
bad input is a 4xx and the server goes on serving the others.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import ErrorEvent, FinishEvent, QueueFull, TokenEvent
from .errors import APIError, error_body
from .openai_params import Job, parse_chat, parse_completion

__all__ = ["build_app", "ServerState"]

# how often a non-streaming request checks whether its client is still there
_DISCONNECT_POLL_S = 0.25


class ServerState:
    """What the routes read: the engine once the model is loaded (None before), its
    tokenizer, the served model's id, the API key, the metrics."""

    def __init__(self, model_id: str, api_key: Optional[str], metrics):
        self.model_id, self.api_key, self.metrics = model_id, api_key, metrics
        self.engine = None
        self.tokenizer = None
        self.load_error: Optional[str] = None
        self.created = int(time.time())


def build_app(state: ServerState, lifespan=None) -> FastAPI:
    app = FastAPI(title="fastdecode", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)

    @app.exception_handler(APIError)
    async def api_error(_request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        message = (f"no route {request.method} {request.url.path}" if exc.status_code == 404
                   else str(exc.detail))
        return JSONResponse(error_body(exc.status_code, message, code="not_found"
                                       if exc.status_code == 404 else None),
                            status_code=exc.status_code)

    @app.get("/health")
    async def health():
        if state.engine is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request):
        _check_key(state, request)
        return {"object": "list", "data": [{"id": state.model_id, "object": "model",
                                             "created": state.created,
                                             "owned_by": "fastdecode"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _serve(state, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _serve(state, request, chat=True)

    return app


def _check_key(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    if header != f"Bearer {state.api_key}":
        raise APIError(401, "Incorrect or missing API key (Authorization: Bearer KEY)",
                       code="invalid_api_key")


async def _serve(state: ServerState, request: Request, chat: bool):
    _check_key(state, request)
    if state.engine is None:
        raise APIError(503, "the model is still loading", code="model_loading",
                       headers={"Retry-After": "1"})
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the request body must be JSON", code="invalid_json")
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "model is required (a string)", param="model")
    if model != state.model_id:
        raise APIError(404, f"The model '{model}' does not exist; this server serves "
                            f"'{state.model_id}'", param="model", code="model_not_found")
    engine, tok = state.engine, state.tokenizer
    parse = parse_chat if chat else parse_completion
    job = parse(body, tok, engine.model.config.vocab_size, engine.ctx)
    queue: asyncio.Queue = asyncio.Queue()
    handles = _submit(engine, job, queue, asyncio.get_running_loop())
    reply = _Reply(state, job, chat)
    if job.stream:
        return StreamingResponse(_stream(reply, queue, handles), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        await _collect(reply, queue, handles, request)
    finally:
        for h in handles:
            h.cancel()
    return reply.whole()


def _submit(engine, job: Job, queue: asyncio.Queue, loop) -> list:
    handles = []
    try:
        for i, req in enumerate(job.requests):
            def sink(event, i=i):  # on the engine thread; raises once the loop is gone
                loop.call_soon_threadsafe(queue.put_nowait, (i, event))
            handles.append(engine.submit(req, sink))
    except QueueFull as e:
        for h in handles:
            h.cancel()
        raise APIError(429, f"the server is busy ({e}); retry shortly", code="queue_full",
                       headers={"Retry-After": "1"})
    except ValueError as e:  # the engine's own checks (the body's were made by parse)
        for h in handles:
            h.cancel()
        raise APIError(400, str(e), code="invalid_value")
    return handles


async def _collect(reply, queue: asyncio.Queue, handles, request: Request) -> None:
    """Every choice to its end; a client that went away cancels the work."""
    while not reply.done:
        try:
            i, event = await asyncio.wait_for(queue.get(), _DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                return
            continue
        reply.add(i, event)
    if reply.error:
        raise APIError(500, reply.error, code="server_error")


async def _stream(reply, queue: asyncio.Queue, handles) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per piece of text, each choice's finish, the usage
    (stream_options.include_usage), then ``data: [DONE]``. Closed early (the client went
    away), it cancels the requests: their slots are free at the engine's next step."""
    try:
        for chunk in reply.opening_chunks():
            yield _sse(chunk)
        while not reply.done:
            i, event = await queue.get()
            for chunk in reply.add(i, event):
                yield _sse(chunk)
        if reply.error:
            yield _sse(error_body(500, reply.error, code="server_error"))
        elif reply.job.include_usage:
            yield _sse(reply.usage_chunk())
        yield b"data: [DONE]\n\n"
    finally:
        for h in handles:
            h.cancel()


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class _Reply:
    """One HTTP request's choices as events arrive: chunks for streaming, the whole
    response otherwise."""

    def __init__(self, state: ServerState, job: Job, chat: bool):
        self.state, self.job, self.chat = state, job, chat
        self.tok = state.tokenizer
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        count = len(job.requests)
        self.texts = [""] * count
        self.finish: List[Optional[str]] = [None] * count
        self.completion_tokens = [0] * count
        self.logprobs: List[list] = [[] for _ in range(count)]
        self.error: Optional[str] = None
        self.open = count

    @property
    def done(self) -> bool:
        return self.open == 0

    # -- events ---------------------------------------------------------------------------
    def add(self, i: int, event) -> list:
        """Record ``event`` of choice ``i``; returns the stream chunks it makes."""
        if isinstance(event, TokenEvent):
            self.texts[i] += event.text
            entry = self._logprob_entry(event)
            if entry is not None:
                self.logprobs[i].append(entry)
            if event.text or entry is not None:
                return [self._chunk(i, event.text, entry, None)]
            return []
        self.open -= 1
        if isinstance(event, ErrorEvent):
            self.error = event.message
            self.finish[i] = "error"
            return []
        assert isinstance(event, FinishEvent)
        self.texts[i] += event.text
        self.finish[i] = event.finish_reason
        self.completion_tokens[i] = event.completion_tokens
        return [self._chunk(i, event.text, None, event.finish_reason)]

    def _token_text(self, token_id: int) -> str:
        return self.tok.decode([token_id])

    def _logprob_entry(self, event: TokenEvent):
        if event.logprob is None:
            return None
        top = [(self._token_text(t), lp) for t, lp in (event.top_logprobs or [])]
        return (self._token_text(event.token_id), event.logprob, top)

    # -- shapes ---------------------------------------------------------------------------
    def _logprobs_json(self, entries: list, offset: int = 0):
        if not self.job.logprobs:
            return None
        if self.chat:
            return {"content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()),
                 "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())}
                                  for a, b in top]} for t, lp, top in entries]}
        offsets, at = [], offset
        for t, _, _ in entries:
            offsets.append(at)
            at += len(t)
        return {"tokens": [t for t, _, _ in entries],
                "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [dict(top) for _, _, top in entries],
                "text_offset": offsets}

    def _head(self, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + \
               (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created,
                "model": self.state.model_id}

    def opening_chunks(self) -> list:
        if not self.chat:
            return []
        return [{**self._head(True), "choices": [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None} for i in range(len(self.job.requests))]}]

    def _chunk(self, i: int, text: str, entry, finish: Optional[str]) -> dict:
        logprobs = self._logprobs_json([entry]) if entry is not None else None
        if self.chat:
            choice = {"index": i, "delta": {"content": text} if text or not finish else {},
                      "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {**self._head(True), "choices": [choice]}

    def _usage(self) -> dict:
        prompt = sum(len(p) for p in self.job.prompts)
        completion = sum(self.completion_tokens)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def usage_chunk(self) -> dict:
        return {**self._head(True), "choices": [], "usage": self._usage()}

    def whole(self) -> dict:
        choices = []
        for i, text in enumerate(self.texts):
            logprobs = self._logprobs_json(self.logprobs[i])
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": logprobs, "finish_reason": self.finish[i]})
            else:
                choices.append({"index": i, "text": text, "logprobs": logprobs,
                                "finish_reason": self.finish[i]})
        return {**self._head(False), "choices": choices, "usage": self._usage()}
