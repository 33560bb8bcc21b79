"""Cancelling a decode from outside its thread: ``with cancel_on(event): ...`` makes every
decode in the block (in this thread) stop with ``DecodeCancelled`` at its next token once
``event`` is set. A queue worker uses it to leave a long request when the program exits.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Optional

__all__ = ["DecodeCancelled", "cancel_on", "check_cancelled", "current_cancel_event"]


class DecodeCancelled(RuntimeError):
    """Raised by a decode whose ``cancel_on`` event was set."""


_CANCEL: contextvars.ContextVar = contextvars.ContextVar("fastdecode_cancel", default=None)


@contextlib.contextmanager
def cancel_on(event: threading.Event):
    token = _CANCEL.set(event)
    try:
        yield
    finally:
        _CANCEL.reset(token)


def current_cancel_event() -> Optional[threading.Event]:
    return _CANCEL.get()


def check_cancelled() -> None:
    """Raise ``DecodeCancelled`` if this thread's cancel event is set."""
    event = _CANCEL.get()
    if event is not None and event.is_set():
        raise DecodeCancelled("decoding was cancelled (the worker is stopping)")
