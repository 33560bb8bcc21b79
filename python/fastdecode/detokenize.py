"""Token ids to text as they arrive: what streaming, stop strings and the REPL read.

Byte-level BPE splits a character over several tokens, so a token's text is known only once
the bytes after it complete the character. ``IncrementalDetokenizer`` decodes a short
window of recent ids (the last emitted chunk plus the pending ids) and releases text only
when it no longer ends in a partial character (U+FFFD): each step costs a decode of a few
tokens, not of the whole reply.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = ["IncrementalDetokenizer", "find_stop"]


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
