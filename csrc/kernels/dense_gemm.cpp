#include "kernels/dense_gemm.h"

#include <algorithm>

#include "kernels/simd.h"

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -Wall
// reports as uninitialised once inlined here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FASTDECODE_AVX512F __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw")))

namespace fastdecode::kernels {
namespace {

constexpr int kTileRows = 4;        // activation rows of a tile (MR)
constexpr int kTileCols = 6;        // weight rows of a tile (NR): 24 accumulators
constexpr int64_t kRowBlock = 64;   // activation rows passing one weight tile

// acc[m][r] += x[m, k..k+16) * w[r, k..k+16) lane by lane (columns outside `cols`: 0).
template <int MR, int NR>
FASTDECODE_AVX512F inline void gemm_step(__m512 (&acc)[MR][NR], const float* x, int64_t ldx,
                                         const float* w, int64_t ldw, int64_t k,
                                         __mmask16 cols) {
  __m512 xv[MR];
  #pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) xv[m] = _mm512_maskz_loadu_ps(cols, x + m * ldx + k);
  #pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    const __m512 wv = _mm512_maskz_loadu_ps(cols, w + r * ldw + k);
    #pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[m][r] = _mm512_fmadd_ps(xv[m], wv, acc[m][r]);
  }
}

// y[m * ldy + r] for m < MR, r < NR: the tile's dot products over K.
template <int MR, int NR>
FASTDECODE_AVX512F void gemm_tile(const float* x, int64_t ldx, int64_t K, const float* w,
                                  int64_t ldw, float* y, int64_t ldy) {
  __m512 acc[MR][NR];
  #pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    #pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  }
  const int64_t full = K - K % 16;
  for (int64_t k = 0; k < full; k += 16) gemm_step<MR, NR>(acc, x, ldx, w, ldw, k, 0xffff);
  // the last columns: masked loads give 0, and fma(0, 0, acc) is acc exactly
  if (full < K) {
    gemm_step<MR, NR>(acc, x, ldx, w, ldw, full,
                      static_cast<__mmask16>((1u << (K - full)) - 1u));
  }
  #pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    #pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t);

// kTiles[MR - 1][NR - 1]
template <int MR, int... NR>
constexpr TileFn tile_row_of[] = {&gemm_tile<MR, NR>...};
const TileFn* const kTiles[kTileRows] = {tile_row_of<1, 1, 2, 3, 4, 5, 6>,
                                          tile_row_of<2, 1, 2, 3, 4, 5, 6>,
                                          tile_row_of<3, 1, 2, 3, 4, 5, 6>,
                                          tile_row_of<4, 1, 2, 3, 4, 5, 6>};

}  // namespace

bool gemm_f32_available() { return selected_isa() == Isa::avx512; }

void gemm_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
              int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
    const int64_t m1 = std::min(M, m0 + kRowBlock);
    for (int64_t n = n_begin; n < n_end; n += kTileCols) {
      const int64_t nr = std::min<int64_t>(kTileCols, n_end - n);
      for (int64_t m = m0; m < m1; m += kTileRows) {
        const int64_t mr = std::min<int64_t>(kTileRows, m1 - m);
        kTiles[mr - 1][nr - 1](x + m * ldx, ldx, K, w + n * ldw, ldw, y + m * ldy + n, ldy);
      }
    }
  }
}

}  // namespace fastdecode::kernels

#else

namespace fastdecode::kernels {

bool gemm_f32_available() { return false; }

void gemm_f32(const float*, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, int64_t,
              float*, int64_t) {}

}  // namespace fastdecode::kernels

#endif
