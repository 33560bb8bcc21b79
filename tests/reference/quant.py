"""Pure-PyTorch oracles for weight-only quantization, written from the seed (004): gpt-fast's
``dynamically_quantize_per_channel`` (int8) and ``get_group_qparams`` +
``group_quantize_tensor_from_qparams`` (int4), with fp32 parameters where gpt-fast rounds
them to bf16, and our packed nibble layout (docs/formats.md)."""
import torch


def quantize_int8_per_channel_ref(w: torch.Tensor):
    x = w.float()
    eps = torch.finfo(torch.float32).eps
    min_val, max_val = torch.aminmax(x, dim=1)
    min_neg = torch.min(min_val, torch.zeros_like(min_val))
    max_pos = torch.max(max_val, torch.zeros_like(max_val))
    max_pos = torch.max(-min_neg, max_pos)
    scales = torch.clamp(max_pos / (float(127 - (-128)) / 2), min=eps)
    q = torch.clamp(torch.round(x / scales.unsqueeze(-1)), -128, 127).to(torch.int8)
    return q, scales


def quantize_int4_grouped_ref(w: torch.Tensor, groupsize: int):
    """-> (q int [N, K_pad] in 0..15, scales [N, G], zeros [N, G], packed uint8 [N, K_pad/2])."""
    x = w.float()
    k = x.shape[1]
    k_pad = (k + groupsize - 1) // groupsize * groupsize
    x = torch.nn.functional.pad(x, (0, k_pad - k))
    groups = x.reshape(-1, groupsize)
    max_val = groups.amax(dim=1, keepdim=True)
    min_val = groups.amin(dim=1, keepdim=True)
    scales = (max_val - min_val).clamp(min=1e-6) / 15
    zeros = min_val + scales * 8
    lo = zeros - scales * 8
    q = groups.sub(lo).div(scales).round().clamp(0, 15).to(torch.int32).reshape(x.shape)
    return q, scales.reshape(x.shape[0], -1), zeros.reshape(x.shape[0], -1), pack_int4_ref(q)


def pack_int4_ref(q: torch.Tensor) -> torch.Tensor:
    """[N, K] values 0..15 -> [N, K/2] bytes: per 32-value block, byte j = v[j] | v[j+16] << 4."""
    n, k = q.shape
    blocks = q.reshape(n, k // 32, 2, 16)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).to(torch.uint8).reshape(n, k // 2)


def dequantize_int4_ref(packed, scales_and_zeros, groupsize):
    n = packed.shape[0]
    lo = (packed & 15).reshape(n, -1, 16)
    hi = (packed >> 4).reshape(n, -1, 16)
    q = torch.cat([lo, hi], dim=2).reshape(n, -1, groupsize).double()
    s = scales_and_zeros[..., 0:1].double()
    z = scales_and_zeros[..., 1:2].double()
    return ((q - 8) * s + z).reshape(n, -1)


def dequantize_int8_ref(q, scales):
    n, k = q.shape
    s = scales.double().reshape(n, -1, 1)
    return (q.double().reshape(n, s.shape[1], -1) * s).reshape(n, k)
