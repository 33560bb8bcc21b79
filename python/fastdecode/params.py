"""``SamplingParams``: how one request samples, as one frozen, typed object.

Every API style converts its own spellings into one of these where it enters (gpt-fast's
``**sampling_kwargs``, llm_utils' ``top_k=-1``, the CLI's ``--top-k 0``, fish-speech's
keywords); the object is checked once, when it is built, by the C++ op's own range check
(``ops.check_sampling_params``), and is then carried as it is to the sampler. Nothing below
re-checks it. "Off" has one spelling per knob: ``top_k=None``, ``top_p=1.0``,
``min_p=0.0``, ``repetition_penalty=1.0``; ``temperature=0`` is greedy.

Knobs are Python numbers, or per-row ``[B]`` tensors (one value per batch row, the form the
kernel's ``[B, 5]`` table is built from).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import torch

from . import ops
from .op_args import KNOB_NAMES
from .validation import check_int, check_seed

__all__ = ["SamplingParams", "generator_for", "KNOB_NAMES"]

Knob = Union[float, int, torch.Tensor]


def generator_for(seed: Optional[int], device: Union[str, torch.device]
                  ) -> Optional[torch.Generator]:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (checked: an int in
    [0, 2^64)), or None for no seed. The one place a seed becomes a generator."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(check_seed("seed", seed))


@dataclass(frozen=True)
class SamplingParams:
    """temperature (0 = greedy), top_k (None = off, else >= 1), top_p in (0, 1], min_p in
    [0, 1), repetition_penalty > 0 (1 = off), each a number or a per-row ``[B]`` tensor;
    seed (an int in [0, 2^64), or None) or generator (a ``torch.Generator``), not both;
    stop (strings that end a completion, matched on the text) and max_tokens (new tokens at
    most, or None: the caller's count). Invalid values raise ``ValueError`` naming the field
    when the object is built."""
    temperature: Knob = 1.0
    top_k: Optional[Knob] = None
    top_p: Knob = 1.0
    min_p: Knob = 0.0
    repetition_penalty: Knob = 1.0
    seed: Optional[int] = None
    generator: Optional[torch.Generator] = field(default=None, compare=False, repr=False)
    stop: Tuple[str, ...] = ()
    max_tokens: Optional[int] = None

    def __post_init__(self):
        rows = None
        for name in KNOB_NAMES:
            v = getattr(self, name)
            if isinstance(v, torch.Tensor):
                if v.dim() > 1 or v.is_complex() or v.dtype == torch.bool:
                    raise ValueError(f"{name} must be a number or a per-row real tensor [B], "
                                     f"got shape {tuple(v.shape)} {v.dtype}")
                if v.dim() == 1:
                    if rows is not None and v.numel() != rows:
                        raise ValueError(f"{name} has {v.numel()} rows, another knob has "
                                         f"{rows}")
                    rows = v.numel()
            elif name == "top_k":
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    raise ValueError(f"top_k must be None (off) or an integer >= 1, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name} must be a number or a per-row tensor, got {v!r}")
        ops.check_sampling_params(rows or 1, self.temperature, self.top_k, self.top_p,
                                  self.min_p, self.repetition_penalty)
        self._check_request()
        stops = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s
                                                          for s in stops):
            raise ValueError(f"stop must be a non-empty str or a list of non-empty str, got "
                             f"{self.stop!r}")
        object.__setattr__(self, "stop", tuple(stops))

    def _check_request(self) -> None:
        """seed, generator and max_tokens (the fields a chat turn changes)."""
        if self.seed is not None:
            object.__setattr__(self, "seed", check_seed("seed", self.seed))
            if self.generator is not None:
                raise ValueError("pass seed or generator, not both")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got "
                             f"{type(self.generator).__name__}")
        if self.max_tokens is not None:
            check_int("max_tokens", self.max_tokens, 1)

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, kwargs: Dict[str, Any], batch_size: Optional[int] = None
                    ) -> "SamplingParams":
        """gpt-fast's ``**sampling_kwargs`` (temperature, top_k with 0 or None = off, top_p,
        min_p, repetition_penalty, generator). ``TypeError`` for an unknown name; per-row
        tensors must have ``batch_size`` rows when it is given."""
        unknown = sorted(set(kwargs) - set(KNOB_NAMES) - {"generator"})
        if unknown:
            raise TypeError(f"unknown sampling argument(s) {unknown}; supported: "
                            f"{sorted([*KNOB_NAMES, 'generator'])}")
        values = dict(kwargs)
        top_k = values.get("top_k")
        if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k == 0:
            values["top_k"] = None  # gpt-fast's other spelling of "off"
        params = cls(**values)
        params.check_rows(batch_size)
        return params

    def replace(self, **changes) -> "SamplingParams":
        """A copy with ``changes``. A changed knob is checked as a new object is; a new
        ``seed``, ``generator`` or ``max_tokens`` alone is checked by itself (the knobs were
        checked when this object was built: a chat turn does not check them again)."""
        if set(changes) & set(KNOB_NAMES) or "stop" in changes:
            return dataclasses.replace(self, **changes)
        unknown = set(changes) - {"seed", "generator", "max_tokens"}
        if unknown:
            raise TypeError(f"SamplingParams has no field(s) {sorted(unknown)}")
        copy = object.__new__(SamplingParams)
        for f in dataclasses.fields(self):
            object.__setattr__(copy, f.name, changes.get(f.name, getattr(self, f.name)))
        copy._check_request()
        return copy

    def for_choice(self, j: int) -> "SamplingParams":
        """The params of choice ``j`` of a request decoded as separate requests (the serving
        engine): seed + j (mod 2^64), so each choice is reproducible by itself and choice 0
        is the request's own; unchanged without a seed."""
        if self.seed is None or j == 0:
            return self
        return self.replace(seed=(self.seed + j) % (1 << 64))

    def check_rows(self, batch_size: Optional[int]) -> None:
        """Per-row knobs must have ``batch_size`` rows."""
        rows = self.rows
        if batch_size is not None and rows is not None and rows != batch_size:
            name = next(n for n in KNOB_NAMES if isinstance(getattr(self, n), torch.Tensor)
                        and getattr(self, n).dim() == 1)
            raise ValueError(f"{name} must be a scalar or a per-row tensor of shape "
                             f"[{batch_size}], got shape ({rows},)")

    # -- reading --------------------------------------------------------------------------
    @property
    def rows(self) -> Optional[int]:
        """Rows of the per-row knobs, or None when every knob is a scalar."""
        for name in KNOB_NAMES:
            v = getattr(self, name)
            if isinstance(v, torch.Tensor) and v.dim() == 1:
                return v.numel()
        return None

    @property
    def greedy(self) -> bool:
        t = self.temperature
        return bool((t == 0).all()) if isinstance(t, torch.Tensor) else t == 0

    @property
    def penalised(self) -> bool:
        rp = self.repetition_penalty
        return isinstance(rp, torch.Tensor) or rp != 1.0

    def with_generator(self, device: Union[str, torch.device]) -> "SamplingParams":
        """The params with ``seed`` turned into a generator on ``device`` (a new one per
        call: each request's draws depend on its own seed alone)."""
        if self.seed is None:
            return self
        return self.replace(seed=None, generator=generator_for(self.seed, device))

    def knobs(self) -> Dict[str, Any]:
        """The sampler's keyword arguments (``fastdecode.sample``, a decode step)."""
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
                "generator": self.generator}

    def describe(self) -> Dict[str, Any]:
        """The settings as plain values (for a response's metadata)."""
        def plain(v):
            return v.tolist() if isinstance(v, torch.Tensor) else v
        return {"temperature": plain(self.temperature), "top_k": plain(self.top_k),
                "top_p": plain(self.top_p), "min_p": plain(self.min_p),
                "repetition_penalty": plain(self.repetition_penalty), "seed": self.seed,
                "stop": list(self.stop), "max_tokens": self.max_tokens}
