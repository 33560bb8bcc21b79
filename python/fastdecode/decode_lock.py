"""One decode at a time per model: its KV caches are its own, so ``decode`` holds a per-model
lock for the whole call (a second thread waits its turn) and refuses at once a decode that
a callback starts on the model it is called from (``ReentrantDecodeError``)."""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Optional

from .model import Transformer
from .speculative import shares_caches

__all__ = ["ReentrantDecodeError", "exclusive", "take", "decoding_here"]


# model -> its decode lock; kept beside the model, not on it, so the model still deep-copies
# (quantized_draft) and pickles
_DECODE_LOCKS: "weakref.WeakKeyDictionary[Transformer, threading.Lock]" = \
    weakref.WeakKeyDictionary()
_LOCK_CREATION = threading.Lock()


def _model_lock(model: Transformer) -> threading.Lock:
    with _LOCK_CREATION:
        lock = _DECODE_LOCKS.get(model)
        if lock is None:
            lock = _DECODE_LOCKS[model] = threading.Lock()
    return lock


class ReentrantDecodeError(RuntimeError):
    """A decode started on a model from inside a decode of that model in the same thread
    (a ``stream`` callback or stop condition calling ``generate`` again): raised at once,
    since waiting for the model's lock would wait forever."""


# the models whose decode lock this thread holds (the re-entrancy check)
_held_by_thread = threading.local()


def _check_not_held(models) -> set:
    held = getattr(_held_by_thread, "ids", None)
    if held is None:
        held = _held_by_thread.ids = set()
    if any(id(m) in held for m in models):
        raise ReentrantDecodeError(
            "a decode was started on a model from inside a decode of the same model (a "
            "stream callback, callback or stop condition calling generate): finish the "
            "outer call first, or use a second model")
    return held


def take(model: Transformer):
    """Hold ``model``'s decode lock beyond one call (the serving engine, for its lifetime):
    waits for a decode in progress, raises ``ReentrantDecodeError`` from a thread decoding
    on it; returns the function that releases it (callable from any thread)."""
    _check_not_held([model])
    lock = _model_lock(model)
    lock.acquire()
    return lock.release


@contextlib.contextmanager
def decoding_here(model: Transformer):
    """This thread counts as decoding on ``model`` (whose lock ``take`` holds): a decode it
    starts on the model raises ``ReentrantDecodeError`` instead of waiting forever."""
    held = _check_not_held([model])
    held.add(id(model))
    try:
        yield
    finally:
        held.discard(id(model))


@contextlib.contextmanager
def exclusive(model: Transformer, draft: Optional[Transformer]):
    """One decode at a time per model: the KV caches are the model's, so two threads
    decoding on one model would overwrite each other's. A second caller waits; a call from
    the thread already decoding on the model (a callback) raises ``ReentrantDecodeError``.
    Locks are taken in id order so that two models used as each other's drafts cannot
    deadlock."""
    models = [model] + ([draft] if draft is not None and not shares_caches(draft, model)
                        else [])
    held = _check_not_held(models)
    locks = [_model_lock(m) for m in sorted(models, key=id)]
    for lock in locks:
        lock.acquire()
    held.update(id(m) for m in models)
    try:
        yield
    finally:
        held.difference_update(id(m) for m in models)
        for lock in reversed(locks):
            lock.release()
