// Torch-free fp32 GEMM for prefill on the x86 SIMD paths: y[m, n] = sum_k x[m, k] * w[n, k].
//
// Prefill multiplies many activation rows (M > 16) by every weight row: compute bound, where
// a GEMM's speed is its FMA rate. On AMD CPUs MKL's SGEMM runs its AVX2 code (256-bit FMAs),
// half the AVX-512 rate, and reaches ~65% of the AVX2 one. This kernel keeps a tile of
// (activation row, weight row) dot products in registers: 4 x 6 in 24 zmm on the avx512
// path (per 16 columns, 10 loads feed 24 FMAs), 3 x 4 in 12 ymm on the avx2 path (7 loads,
// 12 FMAs). Both operands are read along K as stored (no packing): a weight tile stays in
// L1 while the activation rows of a 64-row block pass it, the block staying in L2.
//
// Each y[m, n] is summed the same way wherever it falls in the tiling (lane l accumulates
// columns k = l mod the lane count in order, then one fixed reduction of the lanes), so on
// one path a row's result does not depend on M or on the other rows.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// Output columns per parallel task: a multiple of the kernel's 6-row weight tile; with the
// 17+ activation rows of a GEMM a task is at least ~1 MFLOP at K = 576.
constexpr int64_t kGemmColumnsPerTask = 48;

// Whether gemm_f32 runs its register tiles on this process's kernel path (avx512 or avx2);
// elsewhere (the portable path, aarch64) it is a plain loop, and callers use a BLAS GEMM.
bool gemm_f32_available();

// x: [M, K] row-major (row stride ldx), w: [N, K] row-major (row stride ldw), y: [M, N]
// row-major (row stride ldy). Computes columns n in [n_begin, n_end) of every y row, so
// callers split N across threads.
void gemm_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
              int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

}  // namespace fastdecode::kernels
