// Torch-free fp32 GEMV/skinny-GEMM for decode: y[m, n] = sum_k x[m, k] * w[n, k].
//
// Decode at batch 1 multiplies a 1 x K activation by every weight row once per token, so it
// is bound by how fast the weights stream from memory. Each call handles a contiguous range of
// output rows [n_begin, n_end) so callers can split N across threads; each weight row is
// read once for all M activation rows (M is small: 1..8 in decode).
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// x: [M, K] row-major (row stride ldx), w: [N, K] row-major (row stride ldw),
// y: [M, N] row-major (row stride ldy). Computes rows n in [n_begin, n_end) of every y row.
void gemv_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
              int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

}  // namespace fastdecode::kernels
