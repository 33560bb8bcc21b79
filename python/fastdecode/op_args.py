"""How the Python wrappers in ``ops.py`` turn their arguments into the ops' schema
arguments, and what they check that the dispatcher would report without the argument's
name: a required tensor that is not one, an integer past int64, the sampler's knobs as
scalars or as the per-row ``[rows, 5]`` table."""
from __future__ import annotations

import enum

import torch

from . import _C

__all__ = ["require_tensors", "require_int64", "knob_args", "KNOB_NAMES", "LinearKind"]

# How ops.decode_layers receives each linear (csrc/cpu/linear_kind.h, the one definition).
LinearKind = enum.IntEnum("LinearKind", dict(_C.linear_kinds))


# the sampler's knobs, in the order of the kernel's per-row table
KNOB_NAMES = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def require_tensors(op: str, **named) -> None:
    """TypeError naming the argument when a required tensor is something else: the
    dispatcher would turn None into an undefined tensor and fail without naming it."""
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"fastdecode::{op}: {name} must be a torch.Tensor, got "
                            f"{type(value).__name__}")


_INT64 = (-2 ** 63, 2 ** 63 - 1)


def require_int64(op: str, **named) -> None:
    """ValueError naming the argument when an integer argument (or an entry of an integer
    list) does not fit the schema's int64: the dispatcher would say only "Overflow when
    unpacking long long"."""
    for name, value in named.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        try:  # min / max first: decode_layers passes 5 kinds a layer every step
            if not items or (_INT64[0] <= min(items) and max(items) <= _INT64[1]):
                continue
        except TypeError:  # not numbers: the dispatcher's type check names them
            continue
        for v in items:
            if isinstance(v, int) and not isinstance(v, bool) and \
                    not _INT64[0] <= v <= _INT64[1]:
                raise ValueError(f"fastdecode::{op}: {name} must fit in a 64-bit integer, "
                                 f"got {v}")


def row_param_table(rows: int, knobs, device) -> torch.Tensor:
    """[rows, 5] float64 table (temperature, top_k, top_p, min_p, repetition_penalty) from
    knobs that are Python scalars, 0-d tensors or per-row [rows] tensors."""
    cols = []
    for name, v in zip(KNOB_NAMES, knobs):
        if v is None:  # only top_k may be None: off
            v = 0
        t = torch.as_tensor(v, dtype=torch.float64, device=device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != rows):
            raise ValueError(f"{name} must be a scalar or a per-row tensor of shape [{rows}], "
                             f"got shape {tuple(t.shape)}")
        cols.append(t)
    # every shape checked before any is expanded to `rows`
    return torch.stack([t.expand(rows) for t in cols], dim=1)


def knob_args(rows: int, knobs, device) -> dict:
    """The op's keyword arguments for the knobs: scalars as they are, or the [rows, 5]
    ``row_params`` table when any knob is a tensor."""
    top_k = knobs[1]
    huge_top_k = isinstance(top_k, int) and not _INT64[0] <= top_k <= _INT64[1]
    # a top_k past int64 goes through the float64 table, whose check names it
    if huge_top_k or any(isinstance(v, torch.Tensor) for v in knobs):
        return {"row_params": row_param_table(rows, knobs, device)}
    temperature, top_k, top_p, min_p, repetition_penalty = knobs
    return dict(temperature=float(temperature), top_k=top_k, top_p=float(top_p),
                min_p=float(min_p), repetition_penalty=float(repetition_penalty))
