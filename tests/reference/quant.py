"""Pure-PyTorch oracles for weight-only quantization, written from the seed (004): gpt-fast's
``dynamically_quantize_per_channel`` (int8) and ``get_group_qparams`` +
``group_quantize_tensor_from_qparams`` (int4), with fp32 parameters where gpt-fast rounds
them to bf16, our packed nibble layout in 16-row tiles (docs/formats.md), and the GEMV
path's arithmetic: activations quantized per block of 32 to 8-bit integers."""
import torch

TILE = 16


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
    """-> (q int [N, K_pad] in 0..15, scales [N, G], zeros [N, G] row-major, packed uint8
    [N, K_pad/2] tiled)."""
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
    """[N, K] values 0..15 -> [N, K/2] bytes, per 32-value block byte j = v[j] | v[j+16] << 4,
    then the rows' 4-byte words in 16-row tiles."""
    n, k = q.shape
    blocks = q.reshape(n, k // 32, 2, 16)
    rows = (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).to(torch.uint8).reshape(n, k // 2)
    return tile_words_ref(rows.view(torch.int32)).view(torch.uint8).reshape(n, k // 2)


def _tiled_position(n_rows: int, n_cols: int) -> torch.Tensor:
    """[N, C] -> flat position of word (n, c) in the tiled layout: tile t = n // 16 starts
    at 16 t C; inside it the words are column-major over the tile's r rows."""
    n = torch.arange(n_rows).unsqueeze(1)
    c = torch.arange(n_cols).unsqueeze(0)
    start = n // TILE * TILE
    r = torch.clamp(n_rows - start, max=TILE)
    return start * n_cols + c * r + (n - start)


def tile_words_ref(words: torch.Tensor) -> torch.Tensor:
    """[N, C] 4-byte words (int32 or float32) row-major -> the same [N, C] tensor shape
    holding the words in tiled order."""
    out = torch.empty_like(words).reshape(-1)
    out[_tiled_position(*words.shape).reshape(-1)] = words.reshape(-1)
    return out.reshape(words.shape)


def untile_words_ref(tiled: torch.Tensor) -> torch.Tensor:
    return tiled.reshape(-1)[_tiled_position(*tiled.shape).reshape(-1)].reshape(tiled.shape)


def tile_int8_ref(q: torch.Tensor, scales: torch.Tensor):
    """int8 [N, K] (K a multiple of 32), scales [N] or [N, K / G] -> (uint8 [N, K]: bytes
    q + 128, the rows' 4-byte words in 16-row tiles; scales, [N, K / G] tiled alike)."""
    n, k = q.shape
    u = (q.to(torch.int16) + 128).to(torch.uint8).contiguous()
    packed = tile_words_ref(u.view(torch.int32).reshape(n, k // 4)).view(torch.uint8)
    tiled_scales = scales if scales.dim() == 1 else tile_words_ref(scales.contiguous())
    return packed.reshape(n, k), tiled_scales


def scales_and_zeros_ref(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """Row-major [N, G] scales and zeros -> the tiled [N, G, 2] tensor of the op."""
    n = scales.shape[0]
    return tile_words_ref(torch.stack([scales, zeros], dim=-1).reshape(n, -1)).reshape(n, -1, 2)


def unpack_int4_ref(packed: torch.Tensor, scales_and_zeros: torch.Tensor):
    """-> (q [N, K] int64 in 0..15, scales [N, K/G], zeros [N, K/G]) in row-major order."""
    n = packed.shape[0]
    rows = untile_words_ref(packed.view(torch.int32)).view(torch.uint8).reshape(n, -1)
    lo = (rows & 15).reshape(n, -1, 16)
    hi = (rows >> 4).reshape(n, -1, 16)
    q = torch.cat([lo, hi], dim=2).reshape(n, -1).long()
    sz = untile_words_ref(scales_and_zeros.reshape(n, -1)).reshape(n, -1, 2)
    return q, sz[..., 0], sz[..., 1]


def dequantize_int4_ref(packed, scales_and_zeros, groupsize):
    q, s, z = unpack_int4_ref(packed, scales_and_zeros)
    n = q.shape[0]
    q = q.reshape(n, -1, groupsize).double()
    return ((q - 8) * s.double().unsqueeze(2) + z.double().unsqueeze(2)).reshape(n, -1)


def dequantize_int8_ref(q, scales):
    n, k = q.shape
    s = scales.double().reshape(n, -1, 1)
    return (q.double().reshape(n, s.shape[1], -1) * s).reshape(n, k)


def quantize_activations_ref(x: torch.Tensor):
    """x [M, K] -> (x_hat [M, K] double = xq * s, s per column [M, K]) with, per block of 32
    columns (the last one short), s = max|x| / 127 and xq = round(x * (127 / max|x|)) (8-bit
    activations), both in fp32."""
    x = x.float()
    m, k = x.shape
    k_pad = (k + 31) // 32 * 32
    blocks = torch.nn.functional.pad(x, (0, k_pad - k)).reshape(m, -1, 32)
    amax = blocks.abs().amax(dim=2, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    xq = torch.round(blocks * inv)
    scale = (amax / 127.0).expand_as(blocks)
    x_hat = (xq.double() * scale.double()).reshape(m, k_pad)[:, :k]
    return x_hat, scale.reshape(m, k_pad)[:, :k].double()


def int8_linear_ref(x, q, scales):
    """The GEMV path (up to 16 rows): quantized activations times the int8 weight."""
    x_hat, _ = quantize_activations_ref(x)
    return x_hat @ dequantize_int8_ref(q, scales).t()


def int4_gemv_weight_ref(packed, scales_and_zeros, groupsize):
    """The part of the int4 weight that multiplies the quantized activations: the centred
    (q - 8) * scale (the zero point multiplies exact fp32 sums)."""
    q, s, _ = unpack_int4_ref(packed, scales_and_zeros)
    return (q.double() - 8) * s.double().repeat_interleave(groupsize, dim=1)


def int4_linear_ref(x, packed, scales_and_zeros, groupsize):
    """The GEMV path: sum_g scale_g ((q_g - 8) . x_hat_g) + zero_g * sum(x_g), the zero
    point applied to the fp32 activations' group sums."""
    _, s, z = unpack_int4_ref(packed, scales_and_zeros)
    qs = int4_gemv_weight_ref(packed, scales_and_zeros, groupsize)
    x = torch.nn.functional.pad(x.float(), (0, qs.shape[1] - x.shape[1]))
    x_hat, _ = quantize_activations_ref(x)
    xsum = x.double().reshape(x.shape[0], -1, groupsize).sum(dim=2)
    return x_hat @ qs.t() + xsum @ z.double().t()


def activation_error_bound(x, w_hat):
    """|GEMV - exact| <= sum_k |w_hat[n, k]| * s(k) / 2, w_hat the weight that multiplies the
    quantized activations (int8: the dequantised weight; int4: q * scale): each quantized
    activation is within half its block's step of the fp32 one."""
    _, scale = quantize_activations_ref(x)
    return (scale / 2) @ w_hat[:, :x.shape[1]].abs().t()
