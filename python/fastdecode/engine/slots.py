"""The engine's KV cache slots: one cache row per running request, kept in a fixed order.

The model's caches hold ``max_batch`` rows of ``ctx`` positions. A decode step runs on rows
``[0, n)`` (the model reads and writes the first B rows of its caches), so the rows are
kept in three runs:

    [ decoding: 0 .. decoding-1 ][ prefilling: at most one ][ free: the rest ]

A request that ends gives its row back by swapping rows (the KV of the rows up to their
lengths is copied) so that the runs stay contiguous. A free row keeps the tokens whose KV it
holds: a new request takes the free row sharing the longest prefix with its prompt and
prefills only the rest (a chat's next turn re-reads nothing it has already read); a running
row sharing a longer prefix lends a copy of its keys and values instead (a prefix's keys and
values depend on its tokens alone: every kernel computes a row from that row alone).
"""
from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["SlotTable"]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotTable:
    """Rows of ``model``'s caches. ``owners[r]``: what runs in row r (None when free);
    ``tokens[r]``: the ids whose keys and values row r holds, from position 0."""

    def __init__(self, model, max_batch: int):
        self.model = model
        self.max_batch = max_batch
        self.owners: List[Optional[object]] = [None] * max_batch
        self.tokens: List[List[int]] = [[] for _ in range(max_batch)]
        self.decoding = 0      # rows [0, decoding) decode together
        self.prefilling = False  # row `decoding` is being prefilled

    @property
    def active(self) -> int:
        return self.decoding + int(self.prefilling)

    @property
    def free(self) -> int:
        return self.max_batch - self.active

    def _caches(self):
        return [layer.attention.kv_cache for layer in self.model.layers]

    def swap(self, i: int, j: int) -> None:
        """Exchange rows i and j: their keys and values (up to the longer one's length),
        tokens and owners (an owner's ``row`` follows)."""
        if i == j:
            return
        n = max(len(self.tokens[i]), len(self.tokens[j]))
        if n:
            order = torch.tensor([j, i])
            for cache in self._caches():
                for buf in (cache.k_cache, cache.v_cache):
                    buf[[i, j], :, :n] = buf[order, :, :n]
        self.tokens[i], self.tokens[j] = self.tokens[j], self.tokens[i]
        self.owners[i], self.owners[j] = self.owners[j], self.owners[i]
        for r in (i, j):
            if self.owners[r] is not None:
                self.owners[r].row = r

    def _longest_prefix(self, rows: range, prompt: Sequence[int]) -> Tuple[int, int]:
        """(row, n): the row of ``rows`` holding the longest prefix of ``prompt``, at most
        ``len(prompt) - 1`` positions (the last prompt token is read again for its logits);
        (-1, -1) for no rows."""
        best, longest = -1, -1
        for r in rows:
            n = min(_common_prefix(self.tokens[r], prompt), len(prompt) - 1)
            if n > longest:
                best, longest = r, n
        return best, longest

    def _copy_prefix(self, source: int, target: int, n: int) -> None:
        """Row ``target`` takes the keys and values of row ``source``'s first n positions."""
        for cache in self._caches():
            for buf in (cache.k_cache, cache.v_cache):
                buf[target, :, :n] = buf[source, :, :n]
        self.tokens[target] = list(self.tokens[source][:n])

    def acquire(self, owner, prompt: Sequence[int]) -> Tuple[int, int]:
        """A row for ``owner`` to prefill ``prompt`` into, moved to the prefilling position:
        the free row with the longest cached prefix of it; when a running row holds a longer
        one (requests sharing a system prompt, ``n`` samples of one prompt), a copy of that
        row's prefix. Returns (row, reused): the prefix's positions are not read again."""
        assert not self.prefilling and self.free > 0
        best, reused = self._longest_prefix(range(self.decoding, self.max_batch), prompt)
        donor, shared = self._longest_prefix(range(self.decoding), prompt)
        row = self.decoding
        if shared > reused:  # the first free row takes the copy: no swap moves a cache
            self._copy_prefix(donor, row, shared)
            reused = shared
        else:
            self.swap(row, best)
            del self.tokens[row][reused:]
        self.owners[row] = owner
        owner.row = row
        self.prefilling = True
        return row, reused

    def prefilled(self) -> None:
        """The prefilling row joins the decoding rows."""
        assert self.prefilling
        self.prefilling = False
        self.decoding += 1

    def release(self, row: int) -> None:
        """Free ``row`` (a decoding or the prefilling row), keeping its tokens' KV for
        prefix reuse, and close the gap."""
        if self.prefilling and row == self.decoding:
            self.prefilling = False
        else:
            assert row < self.decoding
            last = self.decoding - 1
            self.swap(row, last)      # the last decoding request takes the freed row
            self.decoding -= 1
            if self.prefilling:       # the prefilling request moves down next to them
                self.swap(last, last + 1)
        # the freed row is now the first free one
        self.owners[self.active] = None

    @contextlib.contextmanager
    def row_view(self, row: int):
        """The model's caches narrowed to ``row`` while a single request is prefilled."""
        attentions = [layer.attention for layer in self.model.layers]
        whole = [a.kv_cache for a in attentions]
        for a, cache in zip(attentions, whole):
            a.kv_cache = cache.rows(row, row + 1)
        try:
            yield
        finally:
            for a, cache in zip(attentions, whole):
                a.kv_cache = cache
