"""The server's Prometheus metrics (``GET /metrics``), fed by the engine's hooks: running
and waiting requests, generated tokens, time to first token, inter-token latency, decode
steps and how full their batch was."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..engine import EngineMetrics

__all__ = ["PrometheusMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
            10.24, 20.48)


class PrometheusMetrics(EngineMetrics):
    """One registry per server (tests start several in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("fastdecode_requests_running",
                             "Requests holding a KV slot (decoding or prefilling)", registry=r)
        self.waiting = Gauge("fastdecode_requests_waiting", "Requests waiting for a slot",
                             registry=r)
        self.generated = Counter("fastdecode_generated_tokens",
                                 "Tokens generated, all requests", registry=r)
        self.ttft = Histogram("fastdecode_time_to_first_token_seconds",
                              "Submission to first token", buckets=_LATENCY, registry=r)
        self.itl = Histogram("fastdecode_inter_token_latency_seconds",
                             "Time between a request's consecutive tokens", buckets=_LATENCY,
                             registry=r)
        self.steps = Counter("fastdecode_decode_steps", "Batched decode steps", registry=r)
        self.occupancy = Histogram("fastdecode_batch_occupancy",
                                   "Rows of a decode step / max_batch",
                                   buckets=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
                                   registry=r)

    def step(self, batch: int, max_batch: int) -> None:
        self.steps.inc()
        self.occupancy.observe(batch / max_batch)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def next_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def tokens(self, count: int) -> None:
        self.generated.inc(count)

    def queue(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)

    def text(self) -> bytes:
        return generate_latest(self.registry)
