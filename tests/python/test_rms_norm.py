"""fastdecode::rms_norm against a float64 oracle (fp32) and Hugging Face's order of
operations (bf16: normalise in fp32, round, scale in bf16); opcheck, compile, bad input."""
import pytest
import torch

from fastdecode import ops


def _rms_norm_f64(x, w, eps):
    xd = x.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * w.double()


@pytest.mark.parametrize("shape", [(1, 1, 576), (3, 7, 64), (5, 17), (2, 1)])
def test_fp32_matches_float64_oracle(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g) * 3
    w = torch.randn(shape[-1], generator=g)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5).double(), _rms_norm_f64(x, w, 1e-5),
                               rtol=1e-5, atol=1e-6)


def test_non_contiguous_input():
    x = torch.randn(8, 64).t()  # [64, 8], stride (1, 64)
    w = torch.randn(8)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6).double(), _rms_norm_f64(x, w, 1e-6),
                               rtol=1e-5, atol=1e-6)


def test_bf16_follows_hugging_face_order():
    x = torch.randn(4, 96).bfloat16()
    w = torch.randn(96).bfloat16()
    xf = x.float()
    want = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    got = ops.rms_norm(x, w, 1e-5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_opcheck_and_compile():
    x, w = torch.randn(3, 32), torch.randn(32)
    torch.library.opcheck(torch.ops.fastdecode.rms_norm.default, (x, w, 1e-5))
    f = torch.compile(lambda t: ops.rms_norm(t, w, 1e-5) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(x), ops.rms_norm(x, w, 1e-5) * 2)


@pytest.mark.parametrize("args,exc,match", [
    ((torch.randn(2, 8), torch.randn(7), 1e-5), ValueError, "weight must have shape"),
    ((torch.randn(2, 8), torch.randn(8).double(), 1e-5), TypeError, "share one floating dtype"),
    ((torch.arange(8).view(1, 8), torch.ones(8, dtype=torch.int64), 1e-5), TypeError,
     "floating dtype"),
    ((torch.randn(2, 8), torch.randn(8), 0.0), ValueError, "eps must be"),
    ((torch.randn(2, 8), torch.randn(8), float("nan")), ValueError, "eps must be"),
])
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        ops.rms_norm(*args)
