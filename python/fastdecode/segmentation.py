"""Splitting long text into segments of at most ``chunk_length`` UTF-8 bytes for
``generate_long``: cut at the last sentence end that fits, else the last comma (or ; :),
else the last space, else a hard cut between characters. A cut point is always followed by
whitespace (or the end), so numbers like ``3.14`` and words like ``e.g.x`` stay whole.
"""
from __future__ import annotations

from typing import List

__all__ = ["split_text"]

_SENTENCE_ENDS = frozenset(".!?\u3002\uff01\uff1f\u2026")
_CLAUSE_ENDS = frozenset(",;:\uff0c\uff1b")


def _fitting_chars(text: str, limit_bytes: int) -> int:
    """Longest prefix length (in characters) whose UTF-8 encoding fits ``limit_bytes``."""
    used = 0
    for i, ch in enumerate(text):
        used += len(ch.encode("utf-8"))
        if used > limit_bytes:
            return i
    return len(text)


def _cut_point(text: str, limit_chars: int) -> int:
    """Where to end the next segment: a prefix length <= limit_chars, by priority."""
    best = {1: 0, 2: 0, 3: 0}
    for i in range(1, limit_chars + 1):
        if i < len(text) and not text[i].isspace():
            continue  # a cut must be followed by whitespace or the end of the text
        prev = text[i - 1]
        if prev in _SENTENCE_ENDS:
            best[1] = i
        elif prev in _CLAUSE_ENDS:
            best[2] = i
        elif not prev.isspace():
            best[3] = i
    for priority in (1, 2, 3):
        if best[priority]:
            return best[priority]
    return max(limit_chars, 1)  # one word longer than a segment: hard cut


def split_text(text: str, chunk_length: int) -> List[str]:
    """Segments of ``text`` (stripped, none empty), each at most ``chunk_length`` UTF-8
    bytes; joined with single spaces they give ``text`` with its whitespace runs collapsed
    (except inside a word cut by a hard cut, whose pieces join without a space)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 4:
        raise ValueError(f"chunk_length must be an integer >= 4 (bytes; one UTF-8 character "
                         f"takes up to 4), got {chunk_length!r}")
    segments: List[str] = []
    rest = text.strip()
    while rest:
        if len(rest.encode("utf-8")) <= chunk_length:
            segments.append(rest)
            break
        cut = _cut_point(rest, _fitting_chars(rest, chunk_length))
        segments.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return segments
