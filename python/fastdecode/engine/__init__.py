"""The continuous-batching serving engine (``Engine``) and its request types; the HTTP
server (``fastdecode.server``) and ``python -m fastdecode serve`` run on it."""
from .engine import Engine, EngineMetrics
from .request import (ErrorEvent, FinishEvent, GenerationRequest, QueueFull, RequestHandle,
                      TokenEvent)

__all__ = ["Engine", "EngineMetrics", "GenerationRequest", "TokenEvent", "FinishEvent",
           "ErrorEvent", "QueueFull", "RequestHandle"]
