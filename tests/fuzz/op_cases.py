"""Fuzz cases for every fastdecode op: a valid call built from a few sizes, then mutations
(a dtype, a zero or grown dimension, a dropped or added dimension, a non-contiguous view,
NaN / inf, None, an out-of-range number, a list one entry short or long).

``run_case(case)`` builds the call from a JSON-able description, runs it and judges it:
  - "ok": the op returned; outputs have the shapes and dtypes its fake kernel gives; for a
    call without mutations the values pass the op's property check; NaN / inf in the
    activations of a linear propagate as in the float reference (never silently zeroed);
  - "error": a ValueError / TypeError raised by the op, or torch's own schema error (which
    names the argument);
  - "bad": anything else (an unexpected exception type, a wrong shape, a broken property).
A crash kills the process that runs this: tests/fuzz/worker.py runs cases one by one so the
parent can tell which case it was.
"""
from __future__ import annotations

import math
import traceback
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F

from fastdecode import ops as OPS  # the public wrappers over torch.ops.fastdecode
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
NUMBERS = [-1, 0, 1, 3, 7, 31, 48, 2 ** 31, -(2 ** 62), 2 ** 63, 2 ** 70, -(2 ** 70), 1e30,
           1e-300, -0.5, 0.999, 1.5, float("nan"), float("inf")]
# alias: a tensor argument (or list entry) replaced by another one of the same shape, so two
# arguments share memory (k_cache is v_cache, one cache for two layers)
MUTATIONS = ["dtype", "zero_dim", "grow_dim", "drop_dim", "add_dim", "noncontig", "nan",
             "inf", "none", "number", "list_short", "list_long", "alias"]


def _rand(g, shape, dtype=torch.float32, scale=1.0):
    return torch.randn(shape, generator=g, dtype=torch.float32).mul_(scale).to(dtype)


def _probs(g, shape):
    return torch.softmax(_rand(g, shape, scale=2.0), -1)


# -- valid calls ---------------------------------------------------------------------------
# Each builder returns (args, call): args a list (tensors, numbers, lists, None), call(args)
# runs the op through its public wrapper (fastdecode.ops), as a user calls it.

def _logits_to_probs(g, d):
    B, V, T = d["B"], d["V"], d["T"]
    args = [_rand(g, (B, V), scale=3.0), torch.randint(0, V, (B, T), generator=g), 0.8,
            min(d["k"], V), 0.9, 0.05, 1.3]
    return args, lambda a: OPS.logits_to_probs(*a)


def _check_sampling_params(g, d):
    # per-row knobs as tensors [B], the rest scalars
    B = d["B"]
    args = [B, torch.full((B,), 0.7), 5, torch.full((B,), 0.9), 0.0, 1.1]
    return args, lambda a: OPS.check_sampling_params(*a)


def _multinomial(g, d):
    return [_probs(g, (d["B"], d["V"])), None, None], \
        lambda a: OPS.multinomial_sample_one_no_sync(a[0], torch.Generator().manual_seed(0)
                                                     if a[1] is None else a[1], a[2])


def _linear(g, d):
    return [_rand(g, (d["M"], d["K"])), _rand(g, (d["N"], d["K"]), scale=0.1),
            _rand(g, (d["N"],))], lambda a: OPS.linear(*a)


def _quantize_int8(g, d):
    return [_rand(g, (d["N"], d["K"]))], lambda a: OPS.quantize_int8_per_channel(*a)


def _quantize_int4(g, d):
    return [_rand(g, (d["N"], d["K"])), d["G"]], lambda a: OPS.quantize_int4_grouped(*a)


def _int8_linear(g, d):
    q, s = OPS.quantize_int8_per_channel(_rand(g, (d["N"], d["K"])))
    return [_rand(g, (d["M"], d["K"])), q, s, None], lambda a: OPS.int8_linear(*a)


def _tiled_int8(g, d):
    """A tiled int8 weight (K rounded up to whole 32-value blocks), per channel or in
    groups of 32 by the seed: (packed, scales, K)."""
    k = max(32, (d["K"] + 31) // 32 * 32)
    w = _rand(g, (d["N"], k))
    if d["seed"] % 2:  # per channel
        q, s = OPS.quantize_int8_per_channel(w)
    else:  # groups of 32
        q, s = OPS.quantize_int8_per_channel(w.reshape(-1, 32))
        q, s = q.reshape(d["N"], k), s.reshape(d["N"], k // 32)
    return (*OPS.tile_int8(q, s), k)


def _int8_linear_tiled(g, d):
    packed, s, k = _tiled_int8(g, d)
    return [_rand(g, (d["M"], k)), packed, s, None], lambda a: OPS.int8_linear(*a)


def _tile_int8(g, d):
    q, s = OPS.untile_int8(*_tiled_int8(g, d)[:2])
    return [q, s], lambda a: OPS.tile_int8(*a)


def _tile_int8_in_place(g, d):
    q, s = OPS.untile_int8(*_tiled_int8(g, d)[:2])
    return [q, s], lambda a: OPS.tile_int8_(*a)


def _untile_int8(g, d):
    return list(_tiled_int8(g, d)[:2]), lambda a: OPS.untile_int8(*a)


def _int8_embedding_tiled(g, d):
    packed, s, _ = _tiled_int8(g, d)
    return [_ids(g, d), packed, s], lambda a: OPS.int8_embedding(*a)


def _int4_linear(g, d):
    packed, sz = OPS.quantize_int4_grouped(_rand(g, (d["N"], d["K"])), d["G"])
    return [_rand(g, (d["M"], d["K"])), packed, sz, d["G"], None], \
        lambda a: OPS.int4_linear(*a)


def _ids(g, d):
    return torch.randint(0, d["N"], (d["B"], d["T"]), generator=g)


def _int8_embedding(g, d):
    q, s = OPS.quantize_int8_per_channel(_rand(g, (d["N"], d["K"])))
    return [_ids(g, d), q, s], lambda a: OPS.int8_embedding(*a)


def _int4_embedding(g, d):
    packed, sz = OPS.quantize_int4_grouped(_rand(g, (d["N"], d["K"])), d["G"])
    return [_ids(g, d), packed, sz, d["G"], d["K"]], lambda a: OPS.int4_embedding(*a)


def _rms_norm(g, d):
    return [_rand(g, (d["M"], d["E"])), _rand(g, (d["E"],)), 1e-5], lambda a: OPS.rms_norm(*a)


def _attention_parts(g, d):
    """Heads, caches (fp32, or fp16 for odd seeds: both dtypes the attention takes), the
    rotations and a position."""
    B, H, Hkv, D, L = d["B"], d["H"] * d["Hkv"], d["Hkv"], d["D"], d["L"]
    cache_dtype = torch.float16 if d["seed"] % 2 else torch.float32
    caches = [_rand(g, (B, Hkv, L, D), cache_dtype) for _ in range(2)]
    angles = torch.rand((L, D // 2), generator=g) * 6.28
    rope = torch.stack([angles.cos(), angles.sin()], -1)
    return H, Hkv, D, caches, rope, torch.tensor([min(d["T"], L - 1)])


def _decode_attention(g, d):
    H, Hkv, D, (k, v), rope, pos = _attention_parts(g, d)
    qkv = _rand(g, (d["B"], 1, (H + 2 * Hkv) * D))
    return [qkv, k, v, pos, rope, H, Hkv], lambda a: OPS.decode_attention(*a)


def _layer_linears(g, d, H, Hkv, D, offset=0):
    """The five linears of a layer as decode_layers takes them, kinds cycling with the seed;
    int8 ones tiled or row-major by another bit of it (gate and up may differ)."""
    E, hidden = d["E"], d["N"]
    shapes = [((H + 2 * Hkv) * D, E), (E, H * D), (hidden, E), (hidden, E), (E, hidden)]
    weights, kinds, groupsizes = [], [], []
    for i, shape in enumerate(shapes):
        kind = (d["seed"] + offset + i) % 3
        w = _rand(g, shape, scale=0.1)
        if kind == 1:
            q, s = OPS.quantize_int8_per_channel(w)
            tiled = (d["seed"] >> (3 + i)) % 2 and shape[1] % 32 == 0
            weights += list(OPS.tile_int8(q, s) if tiled else (q, s))
        elif kind == 2:
            weights += list(OPS.quantize_int4_grouped(w, 32))
        else:
            weights.append(w)
        kinds.append(kind)
        groupsizes.append(32 if kind == 2 else 0)
    return weights, kinds, groupsizes


def _decode_layers(g, d):
    H, Hkv, D, (k, v), rope, pos = _attention_parts(g, d)
    first, second = _layer_linears(g, d, H, Hkv, D), _layer_linears(g, d, H, Hkv, D, 1)
    norms = [_rand(g, (d["E"],)) for _ in range(4)]
    args = [_rand(g, (d["B"], 1, d["E"])), norms, 1e-5, first[0] + second[0],
            first[1] + second[1], first[2] + second[2], [k, k.clone()], [v, v.clone()], pos,
            rope, H, Hkv]
    return args, lambda a: OPS.decode_layers(*a)


def _decode_step(g, d):
    args, _ = _decode_layers(g, d)
    kind = (d["seed"] // 3) % 3  # the head's kind: fp32, int8, int4
    w = _rand(g, (d["V"], d["E"]), scale=0.1)
    head = ([w] if kind == 0 else list(OPS.quantize_int8_per_channel(w)) if kind == 1
            else list(OPS.quantize_int4_grouped(w, 32)))
    args += [_rand(g, (d["E"],)), head, kind, 32 if kind == 2 else 0, bool(d["seed"] % 2)]
    return args, lambda a: OPS.decode_step(*a)


def _argmax_token(g, d):
    return [_rand(g, (d["B"], d["V"]))], lambda a: OPS.argmax_token(*a)


def _shard(g, d):
    t, dim = _rand(g, (d["N"], d["K"])), d["seed"] % 2
    return [t, dim, [0], [max(1, t.shape[dim] // 2)]], lambda a: OPS.shard(*a)


def _shard_int4(g, d):
    packed, sz = OPS.quantize_int4_grouped(_rand(g, (d["N"], d["K"])), d["G"])
    return [packed, sz, d["G"], 0, [0], [max(1, d["N"] // 2)]], \
        lambda a: OPS.shard_int4(*a)


def _speculative_accept(g, d):
    B, k, V = d["B"], d["k"], d["V"]
    p = _probs(g, (B, k, V))
    drafts = torch.multinomial(p.view(-1, V), 1, generator=g).view(B, k)
    return [drafts, p, _probs(g, (B, k + 1, V)), None,
            torch.rand((B, k + 1), generator=g, dtype=torch.float64)], \
        lambda a: OPS.speculative_accept(*a)


BUILDERS: Dict[str, Callable] = {
    "logits_to_probs": _logits_to_probs, "check_sampling_params": _check_sampling_params,
    "multinomial_sample_one_no_sync": _multinomial, "linear": _linear,
    "quantize_int8_per_channel": _quantize_int8, "quantize_int4_grouped": _quantize_int4,
    "int8_linear": _int8_linear, "int4_linear": _int4_linear, "rms_norm": _rms_norm,
    "int8_embedding": _int8_embedding, "int4_embedding": _int4_embedding,
    "int8_linear_tiled": _int8_linear_tiled, "int8_embedding_tiled": _int8_embedding_tiled,
    "tile_int8": _tile_int8, "tile_int8_": _tile_int8_in_place, "untile_int8": _untile_int8,
    "decode_attention": _decode_attention,
    "decode_layers": _decode_layers, "decode_step": _decode_step,
    "speculative_accept": _speculative_accept,
    "argmax_token": _argmax_token, "shard": _shard, "shard_int4": _shard_int4,
}


# -- mutations -----------------------------------------------------------------------------

def _reshaped(t: torch.Tensor, shape, g) -> torch.Tensor:
    if t.dtype.is_floating_point:
        return _rand(g, shape, t.dtype)
    if t.dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.bool)
    hi = int(t.max()) + 1 if t.numel() else 2
    return torch.randint(0, max(hi, 1), shape, generator=g).to(t.dtype)


def _mutate_tensor(t: torch.Tensor, kind: str, g, pick: int, dtype: str) -> Any:
    shape = list(t.shape)
    if kind == "dtype":
        return t.to(DTYPES[dtype])
    if kind in ("zero_dim", "grow_dim") and shape:
        i = pick % len(shape)
        shape[i] = 0 if kind == "zero_dim" else shape[i] + 1
        return _reshaped(t, shape, g)
    if kind == "drop_dim":
        return _reshaped(t, shape[1:], g)
    if kind == "add_dim":
        return _reshaped(t, [1] + shape, g)
    if kind == "noncontig" and t.numel() > 0:
        return torch.stack([t, t], -1)[..., 0]
    if kind in ("nan", "inf") and t.numel() > 0 and t.dtype.is_floating_point:
        t = t.clone()
        t.view(-1)[pick % t.numel()] = float("nan") if kind == "nan" else float("inf")
        return t
    if kind == "none":
        return None
    return t


def _alias(args: List[Any], i: int, pick: int) -> None:
    """args[i] (a tensor, or an entry of a tensor list) becomes another tensor of the same
    shape among the arguments, when there is one."""
    a = args[i]
    # (an entry an earlier mutation made None stays as it is)
    if isinstance(a, list) and a and isinstance(a[pick % len(a)], torch.Tensor):
        j = pick % len(a)
        same = [t for t in a if isinstance(t, torch.Tensor) and t is not a[j]
                and t.shape == a[j].shape]
        if same:
            args[i] = a[:j] + [same[pick % len(same)]] + a[j + 1:]
    elif isinstance(a, torch.Tensor):
        same = [t for t in args if isinstance(t, torch.Tensor) and t is not a
                and t.shape == a.shape]
        if same:
            args[i] = same[pick % len(same)]


def mutate(args: List[Any], kind: str, index: int, pick: int, dtype: str, g) -> None:
    """Apply one mutation to args[index % len(args)] in place (lists: to one entry)."""
    i = index % len(args)
    a = args[i]
    if kind == "alias":
        _alias(args, i, pick)
        return
    if isinstance(a, list):
        if kind == "list_short" and a:
            args[i] = a[:-1]
        elif kind == "list_long":
            args[i] = a + a[:1]
        elif a and isinstance(a[pick % len(a)], torch.Tensor):
            a = list(a)
            a[pick % len(a)] = _mutate_tensor(a[pick % len(a)], kind, g, pick, dtype)
            args[i] = a
        elif a and kind == "number":
            a = list(a)
            a[pick % len(a)] = int(NUMBERS[pick % len(NUMBERS)]) \
                if math.isfinite(NUMBERS[pick % len(NUMBERS)]) else -1
            args[i] = a
    elif isinstance(a, torch.Tensor):
        args[i] = _mutate_tensor(a, kind, g, pick, dtype)
    elif isinstance(a, (int, float)) and kind == "number":
        v = NUMBERS[pick % len(NUMBERS)]
        args[i] = int(v) if isinstance(a, int) and math.isfinite(v) and v == int(v) else v
    elif a is None and kind == "noncontig":
        pass


# -- judging -------------------------------------------------------------------------------

def _clear_error(e: BaseException) -> bool:
    if isinstance(e, (ValueError, TypeError)):
        return True
    # torch's schema check (a wrong Python type for an argument) names the argument
    return isinstance(e, RuntimeError) and "Expected a value of type" in str(e)


def _fake_outputs(call, args):
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=False)

    def fake(x):
        if isinstance(x, torch.Tensor):
            return mode.from_tensor(x)
        if isinstance(x, list):
            return [fake(y) for y in x]
        return x
    fargs = [fake(a) for a in args]
    with mode:
        return call(fargs)


def _flat(out) -> List[torch.Tensor]:
    if out is None:
        return []
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _properties(op: str, args, out) -> str:
    """'' when a valid call's result is right, else what is wrong."""
    outs = _flat(out)
    if op == "logits_to_probs":
        p = outs[0].float()
        if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones(p.shape[0]), atol=1e-3):
            return "probabilities not normalised"
    elif op == "multinomial_sample_one_no_sync":
        idx = outs[0].long().view(-1)
        if not bool((args[0].gather(-1, idx.view(-1, 1)) > 0).all()):
            return "drew a token of probability 0"
    elif op == "linear":
        want = F.linear(*args)
        if not torch.allclose(outs[0], want, rtol=1e-4, atol=1e-4):
            return "linear differs from F.linear"
    elif op == "rms_norm":
        x, w, eps = args
        want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
        if not torch.allclose(outs[0], want, rtol=1e-4, atol=1e-5):
            return "rms_norm differs from the formula"
    elif op in ("int8_embedding", "int8_embedding_tiled", "int4_embedding"):
        # row i of the table is what the linear gives for the i-th unit vector
        ids, k = args[0], outs[0].shape[-1]
        table = (OPS.int4_linear(torch.eye(k), *args[1:4]) if op == "int4_embedding" else
                 OPS.int8_linear(torch.eye(k), *args[1:3])).t()
        if not torch.allclose(outs[0], table[ids], rtol=1e-5, atol=1e-6):
            return "embedding rows differ from the table the linear multiplies by"
    elif op in ("tile_int8", "untile_int8"):
        inverse = OPS.untile_int8 if op == "tile_int8" else OPS.tile_int8
        back = inverse(*outs)
        if not (torch.equal(back[0], args[0]) and torch.equal(back[1], args[1])):
            return "the layout change does not round-trip exactly"
    elif op == "argmax_token":
        if not torch.equal(outs[0].long(), torch.argmax(args[0], -1, keepdim=True)):
            return "argmax_token differs from torch.argmax"
    elif op == "speculative_accept":
        tokens, accepted = outs
        q = args[2]
        for b in range(tokens.shape[0]):
            n = int(accepted[b]) + 1
            last = int(tokens[b, n - 1])
            if q[b, n - 1, last] <= 0:
                return "returned a token of target probability 0"
    return ""


def _nonfinite_pattern(op: str, args, out) -> str:
    """Linears with NaN / inf in x: the non-finite outputs must be where the float reference
    has them (not zeroed on some kernel path)."""
    if op not in ("linear", "int8_linear", "int8_linear_tiled", "int4_linear"):
        return ""
    x = args[0]
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or \
            bool(torch.isfinite(x).all()):
        return ""
    if op == "linear":
        w, bias = args[1], args[2]
    elif op in ("int8_linear", "int8_linear_tiled"):
        q, s, bias = args[1], args[2], args[3]
        if q.dtype == torch.uint8:  # the tiled layout (a mutation may have made it int8)
            q, s = OPS.untile_int8(q, s)
        w = q.float() * (s.view(-1, 1) if s.dim() == 1 else s.repeat_interleave(
            q.shape[1] // s.shape[1], 1))
    else:
        from reference.quant import dequantize_int4_ref
        w = dequantize_int4_ref(args[1].contiguous(), args[2].contiguous(),
                                args[3])[:, :x.shape[-1]]
        bias = args[4]
    if not bool(torch.isfinite(w).all()):
        # the property is about activations: with non-finite scales (which no quantizer
        # makes: they refuse non-finite weights) the zero padding of K meets them too
        return ""
    want = x.double() @ w.double().t()
    if bias is not None:
        want = want + bias.double()
    got = _flat(out)[0].float()
    # non-finite exactly where the reference is: whether inf * w is inf or NaN turns on w
    # being exactly 0, which depends on the precision the weight is dequantised in (fp32 in
    # the kernel, float64 here), so NaN and inf are not told apart
    if not torch.equal(torch.isfinite(got), torch.isfinite(want)):
        return "non-finite outputs differ from the float reference (zeroed or invented)"
    return ""


def _contiguous_copy(a):
    if isinstance(a, torch.Tensor):
        return a.contiguous().clone()
    if isinstance(a, list):
        return [_contiguous_copy(b) for b in a]
    return a


def _same_as_contiguous(call, copy, out) -> str:
    """A call with non-contiguous tensors must give what contiguous copies of them give (a
    kernel that reads a strided tensor's memory as if dense, or a freed temporary, does
    not)."""
    want = _flat(call(copy))
    for got, w in zip(_flat(out), want):
        same = (torch.allclose(got.double(), w.double(), rtol=1e-4, atol=1e-5, equal_nan=True)
                if got.dtype.is_floating_point else torch.equal(got, w))
        if not same:  # floats: a strided tensor may take another, equally exact path
            return "a non-contiguous input gives another result than its contiguous copy"
    return ""


def run_case(case: Dict[str, Any]) -> Dict[str, str]:
    op = case["op"]
    g = torch.Generator().manual_seed(case["dims"]["seed"])
    args, call = BUILDERS[op](g, case["dims"])
    for m in case["mutations"]:
        mutate(args, m["kind"], m["index"], m["pick"], m["dtype"], g)
    kinds = {m["kind"] for m in case["mutations"]}
    # before the call: ops that write their caches start the second call from the same state
    copy = _contiguous_copy(args) if kinds == {"noncontig"} else None
    try:
        out = call(args)
    except Exception as e:  # judged below
        if _clear_error(e):
            return {"outcome": "error", "detail": f"{type(e).__name__}: {str(e)[:300]}"}
        return {"outcome": "bad", "detail": f"unclear {type(e).__name__}: "
                f"{traceback.format_exc()[-1500:]}"}
    try:
        fake = _fake_outputs(call, args)
    except Exception as e:
        return {"outcome": "bad", "detail": f"the fake kernel raised {type(e).__name__}: {e} "
                "where the op returned"}
    for real, f in zip(_flat(out), _flat(fake)):
        if real.shape != f.shape or real.dtype != f.dtype:
            return {"outcome": "bad", "detail": f"output {tuple(real.shape)} {real.dtype}, fake "
                    f"{tuple(f.shape)} {f.dtype}"}
    try:
        problem = (_properties(op, args, out) if not case["mutations"] else "") or \
            _nonfinite_pattern(op, args, out) or \
            (_same_as_contiguous(call, copy, out) if copy is not None else "")
    except Exception:  # a failing check is a finding to read, not a dead worker
        return {"outcome": "bad", "detail": f"the check raised: {traceback.format_exc()[-1500:]}"}
    if problem:
        return {"outcome": "bad", "detail": problem}
    return {"outcome": "ok", "detail": ""}
