"""A completion's text as its tokens arrive: released incrementally, cut at the earliest
stop string, and never releasing text that a later token could turn into a stop string (so
the streamed pieces always add up to the final text)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..detokenize import IncrementalDetokenizer, find_stop

__all__ = ["TextOutput"]


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that begin some stop string (a proper prefix)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class TextOutput:
    """``push(id)`` -> text to release now; ``finish()`` -> the rest. ``stopped`` once a
    stop string was found (the text ends right before it)."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.detok = IncrementalDetokenizer(tokenizer)
        self.ids: List[int] = []
        self.sent = 0  # characters of detok.text released
        self.stop_at: Optional[int] = None

    @property
    def stopped(self) -> bool:
        return self.stop_at is not None

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        new = self.detok.push(token_id)
        text = self.detok.text
        if not new:
            return ""
        at = find_stop(text, self.stops, len(new))
        if at is not None:
            self.stop_at = at
            return self._release(at)
        return self._release(len(text) - _held_back(text, self.stops))

    def finish(self) -> str:
        """The text not released yet: up to the stop string, or all of the decoded ids
        (a character still incomplete at the end comes out as U+FFFD, as decode gives)."""
        if self.stop_at is not None:
            return ""
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        rest = full[self.sent:]
        self.sent = len(full)
        return rest

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece = self.detok.text[self.sent:upto]
        self.sent = upto
        return piece
