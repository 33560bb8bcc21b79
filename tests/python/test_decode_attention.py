"""fastdecode::decode_attention (RoPE + cache write + causal attention for S new positions)
against the model's composite path, which uses ATen's SDPA."""
import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import ops


def _decode_both_ways(model, ids, steps, per_row_pos=False):
    outs = {}
    for fused in (True, False):
        fastdecode.fuse(model) if fused else fastdecode.unfuse(model)
        with torch.no_grad():
            model.setup_caches(ids.shape[0], ids.shape[1] + steps)
            model(ids, torch.arange(ids.shape[1]))
            logits = []
            tok = ids[:, -1:]
            for i in range(steps):
                pos = ids.shape[1] + i
                input_pos = (torch.full((ids.shape[0], 1), pos) if per_row_pos
                             else torch.tensor([pos]))
                out = model(tok, input_pos)
                logits.append(out)
                tok = out[:, -1].argmax(-1, keepdim=True)
            outs[fused] = (torch.cat(logits, 1), model.layers[0].attention.kv_cache.k_cache.clone())
    fastdecode.fuse(model)
    return outs


@pytest.mark.parametrize("overrides", [dict(), dict(n_local_heads=4), dict(n_local_heads=1),
                                       dict(head_dim=16, dim=32)])
@pytest.mark.parametrize("batch,per_row", [(1, False), (3, False), (2, True)])
def test_fused_decode_equals_composite(overrides, batch, per_row):
    model = tiny_model(seed=7, **overrides)
    ids = torch.randint(0, 101, (batch, 5))
    outs = _decode_both_ways(model, ids, 6, per_row)
    torch.testing.assert_close(outs[True][0], outs[False][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[True][1], outs[False][1], rtol=1e-5, atol=1e-6)


def test_rows_at_different_positions():
    """Row 0 at position 6 and row 1 at position 3: each attends to its own prefix only."""
    model = tiny_model(seed=2)
    ids = torch.randint(0, 101, (2, 7))
    with torch.no_grad():
        model.setup_caches(2, 8)
        model(ids[:, :6], torch.arange(6))
        fused = model(torch.stack([ids[0, 6:7], ids[1, 3:4]]), torch.tensor([[6], [3]]))
        fastdecode.unfuse(model)
        model.setup_caches(2, 8)
        model(ids[:, :6], torch.arange(6))
        comp = model(torch.stack([ids[0, 6:7], ids[1, 3:4]]), torch.tensor([[6], [3]]))
        fastdecode.fuse(model)
    torch.testing.assert_close(fused, comp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
def test_multi_position_steps_at_per_row_positions_equal_composite(mode):
    """Speculative verify / draft steps: S = 4 new positions, each row at its own offset,
    through the fused layers (decode_layers over [B, S, E]) and the composite path."""
    from fastdecode.quantize import quantize_model
    model = tiny_model(seed=9)
    if mode is not None:
        quantize_model(model, mode, 32)
    ids = torch.randint(0, 101, (2, 12))
    outs = {}
    for fused in (True, False):
        fastdecode.fuse(model) if fused else fastdecode.unfuse(model)
        with torch.no_grad():
            model.setup_caches(2, 16)
            model(ids[:, :20 // 2], torch.arange(10))  # prefill 10 (composite when > 16)
            pos = torch.tensor([[6, 7, 8, 9], [8, 9, 10, 11]])  # row 0 rewinds, row 1 moves on
            step = torch.stack([ids[0, 6:10], ids[1, 8:12]])
            outs[fused] = (model(step, pos), model.layers[1].attention.kv_cache.v_cache.clone())
    fastdecode.fuse(model)
    # quantized: layer 1's input differs by float rounding between the paths, which the
    # 8-bit activation rounding can turn into a step of one unit
    cache_tol, logits_tol = (1e-5, 1e-4) if mode is None else (1e-4, 1e-3)
    torch.testing.assert_close(outs[True][0], outs[False][0], rtol=logits_tol, atol=logits_tol)
    torch.testing.assert_close(outs[True][1], outs[False][1], rtol=cache_tol, atol=cache_tol)


def test_decode_attention_with_several_positions_opcheck_and_bad_positions():
    qkv, k, v, _, rope, H, Hkv = _args()
    qkv3 = torch.cat([qkv, qkv * 0.5, -qkv], 1)  # [2, 3, ...]
    torch.library.opcheck(torch.ops.fastdecode.decode_attention.default,
                          (qkv3, k, v, torch.tensor([[2, 3, 4], [5, 6, 7]]), rope, H, Hkv))
    assert ops.decode_attention(qkv3, k, v, torch.tensor([4, 5, 6]), rope, H, Hkv).shape == \
        (2, 3, H * 8)
    with pytest.raises(ValueError, match=r"input_pos must be a CPU tensor \[S\] or \[B, S\]"):
        ops.decode_attention(qkv3, k, v, torch.tensor([4, 5]), rope, H, Hkv)
    with pytest.raises(ValueError, match="outside the cache"):
        ops.decode_attention(qkv3, k, v, torch.tensor([8, 9, 10]), rope, H, Hkv)


def _args(B=2, H=4, Hkv=2, D=8, L=10):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, 1, (H + 2 * Hkv) * D, generator=g)
    k = torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    angles = torch.rand(L, D // 2, generator=g) * 6
    rope = torch.stack([angles.cos(), angles.sin()], -1)
    return qkv, k, v, torch.tensor([4]), rope, H, Hkv


def test_opcheck_decode_attention():
    torch.library.opcheck(torch.ops.fastdecode.decode_attention.default, _args())
    qkv, k, v, _, rope, H, Hkv = _args()
    torch.library.opcheck(torch.ops.fastdecode.decode_attention.default,
                          (qkv, k, v, torch.tensor([[2], [9]]), rope, H, Hkv))


@pytest.mark.parametrize("change,match", [
    (lambda a: (a[0][..., :-1],) + a[1:], "qkv must be"),
    (lambda a: a[:3] + (torch.tensor([10]),) + a[4:], "outside the cache"),
    (lambda a: a[:3] + (torch.tensor([1.0]),) + a[4:], "input_pos must be int64"),
    (lambda a: a[:5] + (3, 2), "multiple of n_kv_head"),
    (lambda a: (a[0].double(),) + a[1:], "float32"),
])
def test_bad_input(change, match):
    # a wrong dtype is a TypeError; a wrong shape, range or value a ValueError
    type_error = match in ("input_pos must be int64", "float32")
    with pytest.raises(TypeError if type_error else ValueError, match=match):
        ops.decode_attention(*change(_args()))


@pytest.mark.parametrize("head_dim", [8, 64, 72])  # tails only, vectors only, both
@pytest.mark.parametrize("pos", [torch.tensor([4]), torch.tensor([[30], [17]])])
def test_fp16_caches_attend_exactly_as_fp32_caches_of_the_same_values(head_dim, pos):
    """An fp16 cache holds what an fp32 one does, rounded; the arithmetic after the exact
    widening is the fp32 path's, so caches of fp16-representable values (and a new key that
    the rotation keeps exact: cos 1, sin 0 at the new positions) give the same output bit for
    bit."""
    qkv, k, v, _, rope, H, Hkv = _args(D=head_dim, L=40)
    qkv, k, v = (t.half().float() for t in (qkv, k, v))
    for p in pos.unique().tolist():
        rope[p] = torch.tensor([1.0, 0.0])
    k16, v16 = k.half(), v.half()
    y32 = ops.decode_attention(qkv, k, v, pos, rope, H, Hkv)
    y16 = ops.decode_attention(qkv, k16, v16, pos, rope, H, Hkv)
    assert k16.dtype == torch.float16
    assert torch.equal(k16.float(), k) and torch.equal(v16.float(), v)  # the same writes
    assert torch.equal(y16, y32)


def test_fp16_caches_get_the_fp32_writes_rounded_to_nearest_even():
    qkv, k, v, pos, rope, H, Hkv = _args()  # any rotation: the new key is rounded
    k16, v16 = k.half(), v.half()
    ops.decode_attention(qkv, k, v, pos, rope, H, Hkv)
    ops.decode_attention(qkv, k16, v16, pos, rope, H, Hkv)
    assert torch.equal(k16, k.half()) and torch.equal(v16, v.half())
    assert not torch.equal(k16.float(), k)  # (the fp32 write was not fp16-representable)


def test_opcheck_decode_attention_with_fp16_caches():
    qkv, k, v, _, rope, H, Hkv = _args()
    torch.library.opcheck(torch.ops.fastdecode.decode_attention.default,
                          (qkv, k.half(), v.half(), torch.tensor([[2], [9]]), rope, H, Hkv))


@pytest.mark.parametrize("k_dtype,v_dtype", [(torch.float16, torch.float32),
                                             (torch.bfloat16, torch.bfloat16),
                                             (torch.float64, torch.float64)])
def test_caches_of_another_dtype_are_refused_before_any_write(k_dtype, v_dtype):
    qkv, k, v, pos, rope, H, Hkv = _args()
    k, v = k.to(k_dtype), v.to(v_dtype)
    k0, v0 = k.clone(), v.clone()
    with pytest.raises(TypeError, match="k_cache and v_cache must both be float32 or both "
                                        "float16"):
        ops.decode_attention(qkv, k, v, pos, rope, H, Hkv)
    assert torch.equal(k, k0) and torch.equal(v, v0)


@pytest.mark.parametrize("batch,per_row", [(1, False), (2, True)])
def test_fused_decode_equals_composite_with_fp16_caches(batch, per_row):
    """Both paths write fp16 caches (the fused op's rounding of its rotation, the module
    path's .to(float16)) and read them back widened: the same logits within fp32 noise,
    the same cached values within one fp16 rounding."""
    model = tiny_model(seed=7)
    model.kv_cache_dtype = torch.float16
    ids = torch.randint(0, 101, (batch, 5))
    outs = _decode_both_ways(model, ids, 6, per_row)
    assert outs[True][1].dtype == outs[False][1].dtype == torch.float16
    torch.testing.assert_close(outs[True][0], outs[False][0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(outs[True][1], outs[False][1], rtol=1e-3, atol=1e-5)
