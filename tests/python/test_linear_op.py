"""fastdecode::linear (weight-streaming GEMV for decode; for more than 16 rows our GEMM on
the avx512 and avx2 kernel paths, ATen's linear on the scalar one) against a float64
oracle."""
import pytest
import torch
import torch.nn.functional as F
from reference.sampling import linear_ref

import fastdecode
from fastdecode import ops


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 17, 33, 70, 130])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 5), (64, 576), (193, 17), (960, 576), (13, 1536)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_float64_oracle(rows, n, k, bias):
    g = torch.Generator().manual_seed(n * 1000 + k + rows)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    got = ops.linear(x, w, b)
    want = linear_ref(x, w, b)
    # fp32 dot products of length k: error grows like sqrt(k) * eps * |x||w|
    atol = 1e-5 * (k ** 0.5) * 4
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=atol)


def test_a_rows_result_does_not_depend_on_the_other_rows():
    """Every row count takes the same sums for a row (the GEMM's tiles sum each output the
    same way wherever it falls; the GEMV's rows likewise): bit for bit, alone and in a
    batch of 17..200 rows, as the engine's prefill of one prompt relies on."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(100, 300, generator=g)
    x = torch.randn(200, 300, generator=g)
    full = ops.linear(x, w)
    for rows in (17, 64, 65, 131):
        assert torch.equal(ops.linear(x[:rows], w), full[:rows])
    if fastdecode.build_info()["active_isa"] in ("avx512", "avx2"):  # our GEMM's paths
        for r in (0, 5, 64, 183):  # (one row alone would take the GEMV: another order)
            assert torch.equal(ops.linear(x[r:r + 17], w)[0], full[r])


def test_linear_keeps_leading_dims_and_noncontiguous_input():
    x = torch.randn(2, 3, 40).transpose(0, 1)  # [3, 2, 40], non-contiguous
    w = torch.randn(24, 40)
    torch.testing.assert_close(ops.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    assert ops.linear(x, w).shape == (3, 2, 24)


def test_linear_other_dtypes_fall_back_to_aten():
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    w = torch.randn(32, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(ops.linear(x, w), F.linear(x, w))


@pytest.mark.parametrize("args", [
    (torch.randn(1, 16), torch.randn(8, 16), None),
    (torch.randn(4, 16), torch.randn(8, 16), torch.randn(8)),
    (torch.randn(20, 16), torch.randn(8, 16), None),
])
def test_opcheck_linear(args):
    torch.library.opcheck(torch.ops.fastdecode.linear.default, args)


def test_compile_fullgraph_around_linear():
    w = torch.randn(32, 16)
    f = torch.compile(lambda x: torch.relu(ops.linear(x, w)) * 2, fullgraph=True,
                      backend="aot_eager")
    x = torch.randn(1, 16)
    torch.testing.assert_close(f(x), torch.relu(F.linear(x, w)) * 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x,w,b,exc,match", [
    (torch.randn(1, 16), torch.randn(8, 15), None, ValueError, "K = weight.size"),
    (torch.randn(1, 16), torch.randn(2, 8, 16), None, ValueError, "weight must be 2-D"),
    (torch.randn(1, 16), torch.randn(8, 16, dtype=torch.float64), None, TypeError, "dtype"),
    (torch.randn(1, 16), torch.randn(8, 16), torch.randn(7), ValueError, "bias must have shape"),
    (torch.randn(1, 16), torch.randn(8, 16), torch.randn(8).double(), TypeError, "bias must be"),
    (None, torch.randn(8, 16), None, TypeError, "x must be a torch.Tensor"),
])
def test_linear_bad_input(x, w, b, exc, match):
    with pytest.raises(exc, match=match):
        ops.linear(x, w, b)
