// Torch-free weight-only quantized GEMV / skinny GEMM: y[m, n] = sum_k x[m, k] * w[n, k] with
// w dequantised on the fly from int8 or packed int4; no dequantised copy of the weight.
//
// Both kernels work per group of G columns: the integer-weight dot product of a group is
// accumulated in 16 fp32 lanes and scaled once per group (no horizontal sum per group), and
// the int4 zero point enters through per-group sums of x:
//   y = sum_g scale_g * (x_g . q_g) + (zero_g - 8 * scale_g) * sum(x_g).
// Each call computes output rows [n_begin, n_end) for all M activation rows.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// x: [M, K] fp32 (row stride K), q: [N, K] int8, scales: [N, K / G] (G divides K; G == K is
// per-channel). y: [M, ldy], columns [n_begin, n_end) written.
void int8_gemv(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scales,
               int64_t G, int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

// x: [M, K] fp32 (K a multiple of G, G a multiple of 32), packed: [N, K / 2],
// sz: [N, K / G, 2] (scale, zero), xsum: [M, K / G] per-group sums of x.
// y: [M, ldy], columns [n_begin, n_end) written.
void int4_gemv(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* sz,
               int64_t G, const float* xsum, int64_t n_begin, int64_t n_end, float* y,
               int64_t ldy);

// xsum[m, g] = sum of x[m, g*G : (g+1)*G].
void group_sums(const float* x, int64_t M, int64_t K, int64_t G, float* xsum);

}  // namespace fastdecode::kernels
