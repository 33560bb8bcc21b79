// Torch-free weight-only quantized GEMV / skinny GEMM: y[m, n] = sum_k x[m, k] * w[n, k] with
// w read from int8 or packed int4 bytes; no dequantised copy of the weight.
//
// The activations are quantized first, per block of 32 values, to 8-bit integers (as
// llama.cpp's Q8 activations) with one fp32 scale: x ~ xq * s, s = max|x_block| / 127,
// xq = round_half_even(x * (127 / max|x_block|)) in [-127, 127]. The int4 kernels multiply
// the unsigned nibbles with the signed activation bytes: AVX-512 VNNI's vpdpbusd (64 byte
// products per instruction), AVX2's vpmaddubsw (32, into 16-bit pairs that cannot
// overflow: 2 * 15 * 127 < 2^15). int8 weights: vpdpbusd on the activations made unsigned
// (VNNI), vpmaddwd on both sign-extended to 16 bits (AVX2). The weight-activation
// products are exact integer dot products, scaled once per block:
//   int8: y = sum_b s_b * sw_g(b) * (q_b . xq_b)                 (sw per channel or group)
//   int4: y = sum_g scale_g * sum_{b in g} s_b * ((q_b - 8) . xq_b) + sum_g zero_g * sum(x_g)
// with (q_b - 8) . xq_b = q_b . xq_b - 8 sum(xq_b) exact in integers: the rounded
// activations x_hat = xq * s meet the centred weights (q - 8) * scale, and the zero point
// the exact fp32 sum of x over the group; the two sums over g are accumulated apart (two
// short dependency chains instead of one long one) and added at the end. (Meeting q * scale,
// all of one sign, instead, multiplied the rounding error 2.3x on the default model's
// layers.) The error against the fp32 product is bounded by sum_k |w_hat[n, k]| * s_b(k) / 2
// (w_hat: the int8 weight, or (q - 8) * scale), 0.4% of the block's largest activation per
// term (tests check the bound). On the default model's text this rounding moves perplexity
// by 0.06% (tests/python/test_default_fast_path.py keeps it under 0.5%); 15-bit
// activations, the earlier choice, cost two int4 products per weight byte.
//
// A run-time check picks the AVX-512 VNNI kernels (qgemv_vnni.cpp) where the CPU has them,
// else the AVX2 kernels (qgemv_avx2_int4.cpp, qgemv_avx2_int8.cpp) where it has AVX2 and
// FMA, and the portable ones otherwise; all compute the same integer dot products per block.
#pragma once

#include <cstdint>

#include "kernels/simd.h"

namespace fastdecode::kernels {

constexpr int64_t kActBlock = 32;
// Activation rows up to which the quantized linears run these kernels (more rows: the
// weight is dequantised once and a float GEMM runs). Exposed to Python as
// fastdecode._C.quantized_gemv_max_rows.
constexpr int64_t kQuantizedGemvMaxRows = 32;
constexpr float kActMax = 127.0f;  // 8-bit values, symmetric

// x quantized per 32-value block. q: [M, K] int8 in [-127, 127], scale: [M, K / 32];
// K is a multiple of 32 (columns past the real in-features are zero).
// split (optional): split_activations of q, the operands of the AVX2 tiled int8 kernel
// (which splits q itself when it is null).
struct QuantizedActivations {
  const int8_t* q;
  const float* scale;
  int64_t M, K;
  const int8_t* split = nullptr;
};

// x: [M, K] fp32 (row stride K) -> q: [M, K_pad], scale: [M, K_pad / 32] (K_pad >= K, a
// multiple of 32; columns K..K_pad are zero). An all-zero block gets scale 0. Returns false
// when x holds NaN or infinity (such blocks get q = 0, scale 0): integers cannot carry them,
// so the caller must compute those rows in floating point instead.
bool quantize_activations(const float* x, int64_t M, int64_t K, int64_t K_pad, int8_t* q,
                          float* scale);

// sums[m, g] = the sum of x[m, g*G : (g+1)*G], summed in double: [M, K / G]. x: [M, K], K a
// multiple of G.
void group_sums(const float* x, int64_t M, int64_t K, int64_t G, float* sums);

// int8 weight q: [N, K] row-major (K real in-features, K <= a.K);
// scales: [N] (G == K, per channel) or [N, K / G] with G a multiple of 32.
// Writes y[m * ldy + n] for n in [n_begin, n_end).
void int8_gemv(const QuantizedActivations& a, const int8_t* q, const float* scales, int64_t K,
               int64_t G, int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

// int4 weight in the tiled layout of int4_layout.h: packed [N, a.K / 2], sz [N, a.K / G, 2];
// bsum: [M, a.K / 32] activation_block_sums; xsum: [M, a.K / G] group_sums of the
// activations. Writes y[m * ldy + n] for the rows of tiles [t_begin, t_end).
void int4_gemv(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
               const uint8_t* packed, const float* sz, int64_t N, int64_t G, int64_t t_begin,
               int64_t t_end, float* y, int64_t ldy);

// The sum of each 32-value block of the quantized activations: sums [a.M, a.K / 32] (the
// tiled int8 kernels multiply q + 128 and take 128 * sum back out of each block; the int4
// kernels multiply q and take 8 * sum out).
void activation_block_sums(const QuantizedActivations& a, int32_t* sums);

// xq = 16 * hi + lo with lo = ((xq + 8) & 15) - 8 in [-8, 7] and hi in [-8, 8]: planes
// [a.M, 2, a.K] (each row's lo values, then its hi values). vpmaddubsw multiplies the tiled
// int8 bytes u = q + 128 (unsigned, up to 255) with these without overflowing its 16-bit pair
// sums (2 * 255 * 8 < 2^15), where u times xq itself could (2 * 255 * 127).
void split_activations(const QuantizedActivations& a, int8_t* planes);

// int8 weight in the tiled layout of int8_layout.h: packed [N, a.K] (u = q + 128, K = a.K
// real in-features, a multiple of 32), scales tiled [N, a.K / G] (G == a.K: per channel);
// bsum: activation_block_sums. Per 32-value block and row the exact integer
// u . xq - 128 * sum(xq) = q . xq, scaled as the row-major kernel scales it. Writes
// y[m * ldy + n] for the rows of tiles [t_begin, t_end).
void int8_tiled_gemv(const QuantizedActivations& a, const int32_t* bsum, const uint8_t* packed,
                     const float* scales, int64_t N, int64_t G, int64_t t_begin, int64_t t_end,
                     float* y, int64_t ldy);
// Whether the kernel int8_tiled_gemv dispatches to reads a.split for `rows` activation rows
// (the AVX2 one, whose whole tiles take blocks of 2 rows), so that a caller computes it once
// per call instead of the kernel once per task.
bool int8_tiled_gemv_takes_split(int64_t rows);

// The kernels behind the dispatch, for tests. The VNNI and AVX2 ones are compiled on x86-64
// only and may be called only where qgemv_vnni_available() / qgemv_avx2_available() is true.
bool qgemv_vnni_available();
bool qgemv_avx2_available();
void int8_gemv_portable(const QuantizedActivations& a, const int8_t* q, const float* scales,
                        int64_t K, int64_t G, int64_t n_begin, int64_t n_end, float* y,
                        int64_t ldy);
void int4_gemv_portable(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
                        const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                        int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
void int8_tiled_gemv_portable(const QuantizedActivations& a, const int32_t* bsum,
                              const uint8_t* packed, const float* scales, int64_t N, int64_t G,
                              int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
#if FASTDECODE_X86_CLONES
void int8_gemv_avx2(const QuantizedActivations& a, const int8_t* q, const float* scales,
                    int64_t K, int64_t G, int64_t n_begin, int64_t n_end, float* y,
                    int64_t ldy);
void int4_gemv_avx2(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
                    const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                    int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
void int8_tiled_gemv_avx2(const QuantizedActivations& a, const int32_t* bsum,
                          const uint8_t* packed, const float* scales, int64_t N, int64_t G,
                          int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
void int8_gemv_vnni(const QuantizedActivations& a, const int8_t* q, const float* scales,
                    int64_t K, int64_t G, int64_t n_begin, int64_t n_end, float* y,
                    int64_t ldy);
void int4_gemv_vnni(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
                    const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                    int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
void int8_tiled_gemv_vnni(const QuantizedActivations& a, const int32_t* bsum,
                          const uint8_t* packed, const float* scales, int64_t N, int64_t G,
                          int64_t t_begin, int64_t t_end, float* y, int64_t ldy);
#endif

}  // namespace fastdecode::kernels
