"""Quantizers and packing (exactly equal to the oracles); quantized linears within the
dtype-keyed tolerance of the oracle of their path (up to _C.quantized_gemv_max_rows rows:
int16-quantized activations times the weight; more rows: dequantise-then-matmul) and, on the GEMV path, within the
activation quantization's error bound of dequantise-then-matmul; odd shapes, batches 1..64,
opcheck, compile, bad input."""
import pytest
import torch
from reference.quant import (activation_error_bound, dequantize_int4_ref, dequantize_int8_ref,
                             int4_gemv_weight_ref, int4_linear_ref, int8_linear_ref,
                             quantize_int4_grouped_ref, quantize_int8_per_channel_ref,
                             scales_and_zeros_ref, tile_int8_ref, unpack_int4_ref)

import fastdecode
from fastdecode import ops

SHAPES = [(8, 64), (7, 33), (96, 576), (13, 100), (1, 256)]  # N not a multiple of 8, odd K


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_quantizer_equals_reference_exactly(shape, dtype):
    w = (torch.randn(shape, generator=torch.Generator().manual_seed(shape[0])) * 0.1).to(dtype)
    q, scales = ops.quantize_int8_per_channel(w)
    q_ref, s_ref = quantize_int8_per_channel_ref(w)
    assert q.dtype == torch.int8 and torch.equal(q, q_ref)
    assert scales.dtype == torch.float32 and torch.equal(scales, s_ref)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groupsize", [32, 64, 128, 256])
def test_int4_quantizer_and_packing_equal_reference_exactly(shape, groupsize):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(groupsize + shape[1]))
    packed, sz = ops.quantize_int4_grouped(w, groupsize)
    q_ref, s_ref, z_ref, packed_ref = quantize_int4_grouped_ref(w, groupsize)
    k_pad = q_ref.shape[1]
    assert packed.shape == (shape[0], k_pad // 2) and packed.dtype == torch.uint8
    assert sz.shape == (shape[0], k_pad // groupsize, 2) and sz.dtype == torch.float32
    assert torch.equal(packed, packed_ref)
    assert torch.equal(sz, scales_and_zeros_ref(s_ref, z_ref))
    q, s, z = unpack_int4_ref(packed, sz)  # the tiling round-trips
    assert torch.equal(q, q_ref.long()) and torch.equal(s, s_ref) and torch.equal(z, z_ref)


TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
GEMV_ROWS = fastdecode._C.quantized_gemv_max_rows  # integer kernels up to this many rows


def _check_linear(got, x, w_deq, w_hat, gemv_ref, bias, dtype):
    """got [..., N] against the oracle of its path, and the GEMV path against the exact
    product within the bound of its activation rounding."""
    x2 = x.reshape(-1, x.shape[-1])
    exact = x2.double() @ w_deq.t() + bias
    if x2.shape[0] > GEMV_ROWS:
        want = exact
    else:
        want = gemv_ref(x2) + bias
        if dtype == torch.float32:
            slack = activation_error_bound(x2, w_hat) * 1.001 + 1e-5
            assert bool(((got.reshape(want.shape).double() - exact).abs() <= slack).all())
    torch.testing.assert_close(got.reshape(want.shape).double(), want, **TOL[dtype],
                               check_dtype=False)


@pytest.mark.parametrize("rows", [1, 2, 8, 9, 16, 17, 64])
@pytest.mark.parametrize("shape", [(7, 33), (96, 576), (40, 1536)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_its_oracle(rows, shape, dtype):
    g = torch.Generator().manual_seed(rows * 7 + shape[1])
    w = torch.randn(shape, generator=g) * 0.05
    q, scales = ops.quantize_int8_per_channel(w)
    x = torch.randn(rows, shape[1], generator=g).to(dtype)
    bias = torch.randn(shape[0], generator=g)
    got = ops.int8_linear(x, q, scales, bias)
    assert got.dtype == dtype and got.shape == (rows, shape[0])
    w_deq = dequantize_int8_ref(q, scales)
    _check_linear(got, x, w_deq, w_deq, lambda x2: int8_linear_ref(x2, q, scales), bias.double(),
                  dtype)


@pytest.mark.parametrize("rows", [1, 3, 8, 9, 64])
@pytest.mark.parametrize("shape", [(7, 33), (96, 576), (40, 1536), (17, 256)])
@pytest.mark.parametrize("groupsize", [32, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_matches_its_oracle(rows, shape, groupsize, dtype):
    g = torch.Generator().manual_seed(rows + shape[1] + groupsize)
    w = torch.randn(shape, generator=g) * 0.05
    packed, sz = ops.quantize_int4_grouped(w, groupsize)
    x = torch.randn(2, rows // 2 + 1, shape[1], generator=g).to(dtype)  # leading dims kept
    w_deq = dequantize_int4_ref(packed, sz, groupsize)[:, :shape[1]]
    got = ops.int4_linear(x, packed, sz, groupsize)
    assert got.dtype == dtype and got.shape == (*x.shape[:2], shape[0])
    w_hat = int4_gemv_weight_ref(packed, sz, groupsize)
    _check_linear(got, x, w_deq, w_hat, lambda x2: int4_linear_ref(x2, packed, sz, groupsize),
                  0.0, dtype)


@pytest.mark.parametrize("shape", [(1, 64), (37, 192), (16, 576), (40, 1536)])
@pytest.mark.parametrize("groups", [None, 1, 2])  # per channel; groups of 32, of 64
def test_tile_int8_equals_reference_exactly_and_round_trips(shape, groups):
    n, k = shape
    g = torch.Generator().manual_seed(n + k)
    q = torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    scales = torch.rand(n, generator=g) if groups is None else torch.rand(
        n, k // (32 * groups), generator=g)
    packed, tiled = ops.tile_int8(q, scales)
    want_packed, want_scales = tile_int8_ref(q, scales)
    assert packed.dtype == torch.uint8 and torch.equal(packed, want_packed)
    assert torch.equal(tiled, want_scales)
    q2, s2 = ops.untile_int8(packed, tiled)
    assert q2.dtype == torch.int8 and torch.equal(q2, q) and torch.equal(s2, scales)
    # in place: the same bytes where q was, the scales where they were
    q3, s3 = q.clone(), scales.clone()
    packed3 = ops.tile_int8_(q3, s3)
    assert packed3.data_ptr() == q3.data_ptr() and torch.equal(packed3, packed)
    assert torch.equal(s3, tiled)


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 16, 17, 64])
@pytest.mark.parametrize("shape", [(37, 192), (96, 576), (40, 1536)])
@pytest.mark.parametrize("groupsize", [None, 32, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_int8_linear_matches_its_oracle(rows, shape, groupsize, dtype):
    """The tiled layout gives the row-major weight's product: the same oracle, the same
    activation rounding bound."""
    g = torch.Generator().manual_seed(rows * 3 + shape[1] + (groupsize or 0))
    w = torch.randn(shape, generator=g) * 0.05
    if groupsize is None:
        q, scales = ops.quantize_int8_per_channel(w)
    else:
        q, scales = ops.quantize_int8_per_channel(w.reshape(-1, groupsize))
        q, scales = q.reshape(shape), scales.reshape(shape[0], -1)
    packed, tiled = ops.tile_int8(q, scales)
    x = torch.randn(rows, shape[1], generator=g).to(dtype)
    bias = torch.randn(shape[0], generator=g)
    got = ops.int8_linear(x, packed, tiled, bias)
    assert got.dtype == dtype and got.shape == (rows, shape[0])
    w_deq = dequantize_int8_ref(q, scales)
    _check_linear(got, x, w_deq, w_deq, lambda x2: int8_linear_ref(x2, q, scales), bias.double(),
                  dtype)
    rows_ids = torch.tensor([0, shape[0] - 1, shape[0] // 2])  # the lookup reads either layout
    assert torch.equal(ops.int8_embedding(rows_ids, packed, tiled),
                       ops.int8_embedding(rows_ids, q, scales))


def test_gemv_error_bound_is_tight_enough_to_fail():
    """The bound check would catch an unquantized or wrongly scaled activation block."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 256, generator=g) * 0.05
    q, scales = ops.quantize_int8_per_channel(w)
    x = torch.randn(1, 256, generator=g)
    w_deq = dequantize_int8_ref(q, scales)
    exact = x.double() @ w_deq.t()
    bound = activation_error_bound(x, w_deq)
    got = ops.int8_linear(x, q, scales).double()
    assert bool(((got - exact).abs() <= bound).all())
    # the same output with one block's activations off by a whole step breaks the bound
    wrong = exact + 2 * bound
    assert not bool(((wrong - exact).abs() <= bound).all())


def test_grouped_int8_scales_as_gguf_q8_0():
    g = torch.Generator().manual_seed(4)
    q = torch.randint(-128, 128, (24, 64), generator=g, dtype=torch.int8)
    scales = torch.rand(24, 2, generator=g)  # groups of 32
    x = torch.randn(3, 64, generator=g)
    want = int8_linear_ref(x, q, scales)
    torch.testing.assert_close(ops.int8_linear(x, q, scales).double(), want, rtol=1e-4,
                               atol=1e-4)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.int8_linear(torch.randn(1, 48), q[:, :48], torch.rand(24, 3, generator=g))


def _int4_args():
    w = torch.randn(16, 64)
    packed, sz = ops.quantize_int4_grouped(w, 32)
    return packed, sz


@pytest.mark.parametrize("rows", [1, 12])
def test_opcheck_quantized_ops(rows):
    w = torch.randn(16, 64)
    torch.library.opcheck(torch.ops.fastdecode.quantize_int8_per_channel.default, (w,))
    torch.library.opcheck(torch.ops.fastdecode.quantize_int4_grouped.default, (w[:, :50], 32))
    q, s = ops.quantize_int8_per_channel(w)
    x = torch.randn(rows, 64)
    torch.library.opcheck(torch.ops.fastdecode.int8_linear.default, (x, q, s, torch.randn(16)))
    packed, sz = _int4_args()
    torch.library.opcheck(torch.ops.fastdecode.int4_linear.default, (x, packed, sz, 32))
    for scales in (s, torch.rand(16, 2)):  # per channel, groups of 32
        torch.library.opcheck(torch.ops.fastdecode.tile_int8.default, (q, scales))
        tiled_q, tiled_s = ops.tile_int8(q, scales)
        torch.library.opcheck(torch.ops.fastdecode.untile_int8.default, (tiled_q, tiled_s))
        torch.library.opcheck(torch.ops.fastdecode.tile_int8_.default, (q.clone(), scales.clone()))
        torch.library.opcheck(torch.ops.fastdecode.int8_linear.default, (x, tiled_q, tiled_s))


def test_compile_fullgraph_around_quantized_linears():
    w = torch.randn(32, 64)
    q, s = ops.quantize_int8_per_channel(w)
    packed, sz = ops.quantize_int4_grouped(w, 32)

    def f(x):
        return torch.relu(ops.int8_linear(x, q, s)) + ops.int4_linear(x, packed, sz, 32)

    x = torch.randn(2, 64)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x), f(x))


@pytest.mark.parametrize("call,match", [
    (lambda: ops.quantize_int4_grouped(torch.randn(4, 64), 48), "groupsize must be one of"),
    (lambda: ops.quantize_int4_grouped(torch.randint(0, 3, (4, 64)), 32), "floating"),
    (lambda: ops.quantize_int8_per_channel(torch.randn(4)), "2-D"),
    (lambda: ops.quantize_int8_per_channel(torch.tensor([[1.0, float("nan")]])), "NaN"),
    (lambda: ops.int8_linear(torch.randn(2, 63), *ops.quantize_int8_per_channel(torch.randn(4, 64))),
     r"x must have shape \[\.\.\., K\] with K = 64"),
    (lambda: ops.int8_linear(torch.randn(2, 64), torch.zeros(4, 64), torch.ones(4)), "int8"),
    (lambda: ops.int8_linear(torch.randn(2, 64), torch.zeros(4, 64, dtype=torch.int8),
                             torch.ones(5).double()), "scales must be float32"),
    (lambda: ops.int8_linear(torch.randn(2, 64), torch.zeros(4, 64, dtype=torch.int8),
                             torch.ones(5)), r"scales must be \[N\]"),
    (lambda: ops.int8_linear(torch.randn(2, 64).double(),
                             *ops.quantize_int8_per_channel(torch.randn(4, 64))), "x must be float32"),
    (lambda: ops.int8_linear(torch.randn(2, 48), torch.zeros(4, 48, dtype=torch.uint8),
                             torch.ones(4)), "a tiled \\(uint8\\) q needs K a multiple of 32"),
    (lambda: ops.tile_int8(torch.zeros(4, 48, dtype=torch.int8), torch.ones(4)),
     "tile_int8: the tiled layout needs K a positive multiple of 32"),
    (lambda: ops.tile_int8(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4)),
     "the weight must be Char"),
    (lambda: ops.tile_int8_(torch.zeros(4, 128, dtype=torch.int8)[:, :64], torch.ones(4)),
     "both must be contiguous"),
    (lambda: ops.untile_int8(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4, 3)),
     r"scales must be \[N\] \(per channel\) or \[N, K / G\]"),
    (lambda: ops.int4_linear(torch.randn(2, 64), *_int4_args(), 64), "scales_and_zeros must be"),
    (lambda: ops.int4_linear(torch.randn(2, 65), *_int4_args(), 32), "x must have shape"),
    (lambda: ops.int4_linear(torch.randn(2, 64), *_int4_args(), 100), "groupsize must be one of"),
    (lambda: ops.int4_linear(torch.randn(2, 64), _int4_args()[0].to(torch.int8), _int4_args()[1],
                             32), "packed must be uint8"),
])
def test_bad_input_is_a_clear_error(call, match):
    # a wrong dtype is a TypeError; a wrong shape, range or value a ValueError
    type_error = match in ("floating", "int8", "scales must be float32", "x must be float32",
                           "packed must be uint8", "the weight must be Char")
    with pytest.raises(TypeError if type_error else ValueError, match=match):
        call()
