"""Argument checks that the C++ ops cannot make: Python types, counts, and the tighter ranges
an API documents on top of the ops' own (fish-speech's ``generate_long`` keeps temperature in
(0, 2), llm_utils' ``LLM.generate`` in [0, 2]). The ops' ranges are checked once, in C++
(``ops.check_sampling_params``); every failure here is a ``ValueError`` naming the argument,
the same exception type the ops raise.
"""
from __future__ import annotations

__all__ = ["check_int", "check_range", "check_flag", "check_seed", "as_token_id",
           "as_token_ids", "check_config_types", "check_device"]


def check_int(name: str, value, minimum: int) -> int:
    """``value`` must be an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_range(name: str, value, lo: float, hi: float, *, lo_open: bool,
                hi_open: bool) -> float:
    """``value`` must be a real number in the interval between ``lo`` and ``hi`` (open or
    closed at each end); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}"
                         f"{')' if hi_open else ']'}, got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """``value`` must be a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


# torch.Generator.manual_seed takes a 64-bit seed
SEED_RANGE = (0, 2 ** 64 - 1)


def _integer_value(value):
    """A Python int from an int, a 0-d integer tensor or a NumPy integer; None otherwise.
    A bool, a float (3.7 or 3.0), a str or a 1-d tensor is not an integer id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        import torch
        if isinstance(value, torch.Tensor):
            if value.dim() == 0 and not value.dtype.is_floating_point and \
                    not value.dtype.is_complex and value.dtype != torch.bool:
                return int(value)
            return None
    except ImportError:  # pragma: no cover
        pass
    numpy = __import__("sys").modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.integer):
        return int(value)
    return None


def check_seed(name: str, seed) -> int:
    """A generator seed: an integer in [0, 2^64 - 1] (what torch.Generator.manual_seed
    takes)."""
    v = _integer_value(seed)
    if v is None or not SEED_RANGE[0] <= v <= SEED_RANGE[1]:
        raise ValueError(f"{name} must be None or an int in [0, 2^64 - 1], got {seed!r}")
    return v


def as_token_id(name: str, value, vocab_size: int, _many: bool = False) -> int:
    """One token id in [0, vocab_size): a Python int, a 0-d integer tensor or a NumPy
    integer, nothing else (not a bool, a float, a str or a list)."""
    v = _integer_value(value)
    if v is None:
        raise ValueError(f"{name} must be a token id (an int, a 0-d integer tensor or a NumPy "
                         f"integer), got {value!r} ({type(value).__name__})")
    if not 0 <= v < vocab_size:
        what = "hold token ids" if _many else "be a token id"
        raise ValueError(f"{name} must {what} in [0, {vocab_size}), got {v} (the model's "
                         "vocab_size bounds the ids)")
    return v


def as_token_ids(name: str, value, vocab_size: int) -> list:
    """One id or a sequence of ids (list, tuple, 1-d integer tensor or array), each as
    ``as_token_id`` takes it; returns a list of Python ints."""
    if _integer_value(value) is not None or isinstance(value, (str, bytes, bool, float)):
        return [as_token_id(name, value, vocab_size, True)]  # one id, or raises
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{name} must be a token id or a sequence of token ids, got "
                         f"{value!r} ({type(value).__name__})") from None
    return [as_token_id(name, v, vocab_size, True) for v in items]


def check_config_types(file, cls, data: dict) -> None:
    """Each value of a JSON config ``data`` must have its dataclass field's type: an int
    field takes an int (not a bool, a float or a str), a float field a number, a bool field
    a JSON boolean (``"false"`` is a string, not False), a str field a str;
    ``Optional[...]`` fields also take null. ValueError naming ``file`` and the field."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) is typing.Union and type(None) in args
        if optional:
            if value is None:
                continue
            hint = next(a for a in args if a is not type(None))
        if hint is bool:
            ok = isinstance(value, bool)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif hint is str:
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            want = {bool: "true or false", int: "an integer", float: "a number",
                    str: "a string"}[hint]
            raise ValueError(f"{file}: config field {f.name} must be {want}"
                             f"{' or null' if optional else ''}, got {value!r}")


def check_device(device):
    """A ``torch.device`` fastdecode can run on (``cpu``, or ``cuda`` / ``cuda:N`` when
    such a GPU is visible); ValueError naming the device otherwise."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device {device!r} is not a device name (try 'cpu' or "
                             "'cuda')") from None
    else:
        raise ValueError(f"device must be a str or torch.device, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r}: no CUDA device is available (this torch "
                             "has no CUDA support or no GPU is visible)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(dev)!r}: fastdecode runs on 'cpu' or 'cuda'")
    return dev
