"""``python -m fastdecode serve``: the HTTP server starts at once (``/health`` answers 503
while the model loads), loads the checkpoint on a thread, starts the engine, and on SIGTERM
or Ctrl-C stops taking requests, ends the running ones and exits."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Optional

__all__ = ["serve", "kv_cache_dtype_of", "KV_CACHE_DTYPES"]

log = logging.getLogger("fastdecode.server")


KV_CACHE_DTYPES = ("auto", "float16", "float32")


def kv_cache_dtype_of(name: str, active_isa: str):
    """The ``Transformer.kv_cache_dtype`` a ``--kv-cache-dtype`` value gives on a kernel path:
    "float16" (half the KV memory and the bytes a batched step reads; each key and value
    rounded once), "float32" (None: the activations' dtype, what ``generate`` and
    ``LLM.generate`` use by default), or "auto": float16 where the path converts fp16 in
    hardware (avx2, avx512: F16C; neon), float32 on the portable path, whose software
    conversions would make attention over fp16 caches ~18x slower than over fp32 ones."""
    import torch

    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got "
                         f"{name!r}")
    if name == "auto":
        name = "float32" if active_isa == "scalar" else "float16"
    return torch.float16 if name == "float16" else None


def serve(checkpoint: str = "default", *, quantize: Optional[str] = None,
          host: str = "127.0.0.1", port: int = 8000, api_key: Optional[str] = None,
          max_batch: int = 8, ctx: int = 2048, max_waiting: int = 64,
          model_name: Optional[str] = None, kv_cache_dtype: str = "auto") -> int:
    """kv_cache_dtype: "auto", "float16" or "float32" (``kv_cache_dtype_of``)."""
    import uvicorn

    from .. import build_info
    from ..compat.llm_utils import LLM
    from ..engine import Engine
    from ..engine.engine import check_engine_sizes
    from .app import ServerState, build_app
    from .metrics import PrometheusMetrics

    check_engine_sizes(max_batch, ctx, max_waiting)  # before anything loads or binds
    kv_dtype = kv_cache_dtype_of(kv_cache_dtype, build_info()["active_isa"])
    metrics = PrometheusMetrics()
    state = ServerState(model_name or checkpoint, api_key, metrics)
    server: Optional[uvicorn.Server] = None

    def load() -> None:
        try:
            llm = LLM(checkpoint, quantize=quantize)
            llm.model.kv_cache_dtype = kv_dtype
            engine = Engine(llm.model, llm.tokenizer, max_batch=max_batch,
                            ctx=min(ctx, llm.model.config.block_size),
                            max_waiting=max_waiting, metrics=metrics, huge_pages=True)
            state.tokenizer = llm.tokenizer
            state.engine = engine.start()
            print(f"fastdecode serving {state.model_id} on http://{host}:{port} "
                  f"(max batch {max_batch}, context {engine.ctx}, KV caches "
                  f"{llm.model.cache_dtype}, decode path {llm.model.decode_path})",
                  file=sys.stderr, flush=True)
        except Exception as e:  # the server cannot serve: say why and exit
            state.load_error = f"{type(e).__name__}: {e}"
            print(f"error: cannot load {checkpoint!r}: {state.load_error}", file=sys.stderr,
                  flush=True)
            if server is not None:
                server.should_exit = True

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        threading.Thread(target=load, name="fastdecode-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.stop()

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            # SIGTERM is the normal way to stop a server: after the graceful shutdown exit
            # with status 0, not by re-raising the signal (uvicorn's default)
            captured = getattr(self, "_captured_signals", [])
            if sig == signal.SIGTERM and sig in captured:
                captured.remove(sig)

    app = build_app(state, lifespan)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=5)
    server = Server(config)
    server.run()
    return 1 if state.load_error else 0
