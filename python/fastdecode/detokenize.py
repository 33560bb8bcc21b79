"""Token ids to text as they arrive: what streaming, stop strings and the REPL read.

Byte-level BPE splits a character over several tokens, so a token's text is known only once
the bytes after it complete the character. ``IncrementalDetokenizer`` decodes a short
window of recent ids (the last emitted chunk plus the pending ids) and releases text only
when it no longer ends in a partial character (U+FFFD): each step costs a decode of a few
tokens, not of the whole reply. ``TextOutput`` is a completion's text on top of it: cut at
the earliest stop string, and never releasing text that a later token could turn into one,
so streamed pieces always add up to the final text (``LLM.generate`` and the engine).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = ["IncrementalDetokenizer", "find_stop", "TextOutput"]


class IncrementalDetokenizer:
    """``push(id)`` -> the new text that id completes (often ``""``); ``text`` is all text
    released so far, always a prefix of ``tokenizer.decode(ids)``."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: List[int] = []
        self.text = ""
        self._prefix = 0  # ids[_prefix:_read] decode to the last released chunk
        self._read = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self._prefix:self._read])
        window = self._decode(self.ids[self._prefix:])
        if len(window) <= len(before) or window.endswith("\ufffd"):
            return ""
        new = window[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += new
        return new


def find_stop(text: str, stops: Sequence[str], new_chars: int) -> Optional[int]:
    """Index in ``text`` of the earliest stop string that ends within its last ``new_chars``
    characters (earlier text was searched before), or None. Stops that span token
    boundaries are found because the search runs on decoded text."""
    if not stops or new_chars <= 0:
        return None
    longest = max(len(s) for s in stops)
    start = max(0, len(text) - new_chars - longest + 1)
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


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
    """``push(id)`` -> text to release now; ``finish()`` -> the rest. ``text``: all text
    released so far (after ``finish``, the completion); ``stopped`` once a stop string was
    found (the text ends right before it)."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.detok = IncrementalDetokenizer(tokenizer)
        self.text = ""
        self.stop_at: Optional[int] = None

    @property
    def ids(self) -> List[int]:
        return self.detok.ids

    @property
    def stopped(self) -> bool:
        return self.stop_at is not None

    def push(self, token_id: int) -> str:
        new = self.detok.push(token_id)
        if not new:
            return ""
        text = self.detok.text
        at = find_stop(text, self.stops, len(new))
        if at is not None:
            self.stop_at = at
            return self._release(text[:at])
        return self._release(text[:len(text) - _held_back(text, self.stops)])

    def finish(self) -> str:
        """The text not released yet: up to the stop string, or all of the decoded ids
        (a character still incomplete at the end comes out as U+FFFD, as decode gives)."""
        if self.stop_at is not None:
            return ""
        return self._release(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _release(self, upto: str) -> str:
        """``upto``: the text to have released, which starts with ``text``."""
        piece = upto[len(self.text):]
        self.text += piece
        return piece
