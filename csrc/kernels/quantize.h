// Torch-free weight quantization, one output row at a time (rows are independent).
//
// int8 per channel (gpt-fast's dynamically_quantize_per_channel, symmetric):
//   scale = max(|min(w)|, |max(w)|, 0) / 127.5, clamped below at FLT_EPSILON;
//   q = clamp(round_half_even(w / scale), -128, 127).
// int4 grouped (gpt-fast's get_group_qparams / group_quantize_tensor_from_qparams, with fp32
// instead of bf16 parameters): per group of G values,
//   scale = max(max - min, 1e-6) / 15,  zero = min + 8 * scale,
//   q = clamp(round_half_even((w - (zero - 8 * scale)) / scale), 0, 15),
// so that w ~ (q - 8) * scale + zero.
//
// Packed int4 row (docs/formats.md): K/2 bytes in 32-value blocks; byte j of a block holds
// value j in its low nibble and value j + 16 in its high nibble (GGML's order, so GGUF
// Q4_0/Q4_1 blocks keep their bytes). The ops then regroup rows in 16-row tiles
// (int4_layout.h).
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// w: [K] -> q: [K] int8; returns the row's scale.
float quantize_int8_row(const float* w, int64_t K, int8_t* q);

// w: [K] (K a multiple of G and of 32) -> packed: [K / 2] bytes, sz: [K / G][2] (scale, zero).
void quantize_int4_row(const float* w, int64_t K, int64_t G, uint8_t* packed, float* sz);

// q [N, K] int8 and scales [N, K / G] (G = K: one per row) -> rows [n0, n1) of w = q * scale
// as fp32 into dst [n1 - n0, K].
void dequantize_int8_rows(const int8_t* q, const float* scales, int64_t K, int64_t G, int64_t n0,
                          int64_t n1, float* dst);

// The 4-bit value at column k of a packed row (for tests and dequantisation).
inline int unpack_int4(const uint8_t* packed, int64_t k) {
  const uint8_t byte = packed[(k / 32) * 16 + (k % 16)];
  return (k % 32) < 16 ? (byte & 0x0f) : (byte >> 4);
}

}  // namespace fastdecode::kernels
