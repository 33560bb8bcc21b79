#include "kernels/dense_gemm.h"

#include <algorithm>

#include "kernels/simd.h"

namespace fastdecode::kernels {
namespace {

// Every path without the tiles below: each y[m, n] one dot product in k's order (callers
// take a BLAS GEMM there, gemm_f32_available() is false; this keeps gemm_f32 correct
// wherever it is called, and a row's result independent of the other rows).
void gemm_portable(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w,
                   int64_t ldw, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += x[m * ldx + k] * w[n * ldw + k];
      y[m * ldy + n] = acc;
    }
  }
}

}  // namespace
}  // namespace fastdecode::kernels

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

#include "kernels/avx2_sum.h"

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -Wall
// reports as uninitialised once inlined here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FASTDECODE_AVX512F __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw")))
#define FASTDECODE_AVX2F __attribute__((target("avx2,fma")))

namespace fastdecode::kernels {
namespace {

constexpr int64_t kRowBlock = 64;  // activation rows passing one weight tile

// The loops over a tile's rows are unrolled before GCC's scalar replacement (#pragma GCC
// unroll): otherwise it keeps acc[MR][NR] in memory and stores every accumulator every 16
// columns (a quarter of the FMA rate).

// AVX-512: acc[m][r] += x[m, k..k+16) * w[r, k..k+16) lane by lane (columns outside `cols`
// load as 0, and fma(0, 0, acc) is acc exactly).
template <int MR, int NR>
FASTDECODE_AVX512F inline void zmm_step(__m512 (&acc)[MR][NR], const float* x, int64_t ldx,
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
FASTDECODE_AVX512F void zmm_tile(const float* x, int64_t ldx, int64_t K, const float* w,
                                 int64_t ldw, float* y, int64_t ldy) {
  __m512 acc[MR][NR] = {};  // zeros
  const int64_t full = K - K % 16;
  for (int64_t k = 0; k < full; k += 16) zmm_step<MR, NR>(acc, x, ldx, w, ldw, k, 0xffff);
  if (full < K) {
    zmm_step<MR, NR>(acc, x, ldx, w, ldw, full, static_cast<__mmask16>((1u << (K - full)) - 1u));
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
  }
}

// AVX2: the same over 8 columns; kMasked: only the lanes of `cols` whose sign bit is set
// load, the others are 0 (vmaskmovps is slower than a plain load: the last columns only).
template <bool kMasked>
FASTDECODE_AVX2F inline __m256 ymm_load(const float* p, __m256i cols) {
  return kMasked ? _mm256_maskload_ps(p, cols) : _mm256_loadu_ps(p);
}

template <int MR, int NR, bool kMasked>
FASTDECODE_AVX2F inline void ymm_step(__m256 (&acc)[MR][NR], const float* x, int64_t ldx,
                                      const float* w, int64_t ldw, int64_t k, __m256i cols) {
  __m256 xv[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) xv[m] = ymm_load<kMasked>(x + m * ldx + k, cols);
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    const __m256 wv = ymm_load<kMasked>(w + r * ldw + k, cols);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[m][r] = _mm256_fmadd_ps(xv[m], wv, acc[m][r]);
  }
}

template <int MR, int NR>
FASTDECODE_AVX2F void ymm_tile(const float* x, int64_t ldx, int64_t K, const float* w,
                               int64_t ldw, float* y, int64_t ldy) {
  __m256 acc[MR][NR] = {};  // zeros
  const int64_t full = K - K % 8;
  const __m256i all = _mm256_set1_epi32(-1);
  for (int64_t k = 0; k < full; k += 8) ymm_step<MR, NR, false>(acc, x, ldx, w, ldw, k, all);
  if (full < K) {
    const __m256i cols = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - full)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    ymm_step<MR, NR, true>(acc, x, ldx, w, ldw, full, cols);
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) y[m * ldy + r] = sum_lanes(acc[m][r]);
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t);

// A path's tile shape and kernels: kRows activation rows x kCols weight rows in registers
// (AVX-512: 4 x 6 = 24 of 32 zmm; AVX2: 3 x 4 = 12 of 16 ymm).
struct Zmm {
  static constexpr int kRows = 4, kCols = 6;
  template <int MR, int NR>
  static constexpr TileFn tile = &zmm_tile<MR, NR>;
};
struct Ymm {
  static constexpr int kRows = 3, kCols = 4;
  template <int MR, int NR>
  static constexpr TileFn tile = &ymm_tile<MR, NR>;
};

// The tile kernel for a partial tile (mr <= kRows, nr <= kCols).
template <typename V, int MR = V::kRows, int NR = V::kCols>
TileFn partial_tile(int64_t mr, int64_t nr) {
  if (mr == MR && nr == NR) return V::template tile<MR, NR>;
  if constexpr (NR > 1) {
    return partial_tile<V, MR, NR - 1>(mr, nr);
  } else if constexpr (MR > 1) {
    return partial_tile<V, MR - 1, V::kCols>(mr, nr);
  } else {
    return nullptr;
  }
}

template <typename V>
void gemm_tiles(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
                int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  const TileFn full = V::template tile<V::kRows, V::kCols>;
  for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
    const int64_t m1 = std::min(M, m0 + kRowBlock);
    for (int64_t n = n_begin; n < n_end; n += V::kCols) {
      const int64_t nr = std::min<int64_t>(V::kCols, n_end - n);
      for (int64_t m = m0; m < m1; m += V::kRows) {
        const int64_t mr = std::min<int64_t>(V::kRows, m1 - m);
        const TileFn tile = mr == V::kRows && nr == V::kCols ? full : partial_tile<V>(mr, nr);
        tile(x + m * ldx, ldx, K, w + n * ldw, ldw, y + m * ldy + n, ldy);
      }
    }
  }
}

}  // namespace

bool gemm_f32_available() {
  return selected_isa() == Isa::avx512 || selected_isa() == Isa::avx2;
}

void gemm_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
              int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  switch (selected_isa()) {
    case Isa::avx512: return gemm_tiles<Zmm>(x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy);
    case Isa::avx2: return gemm_tiles<Ymm>(x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy);
    default: return gemm_portable(x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy);
  }
}

}  // namespace fastdecode::kernels

#else

namespace fastdecode::kernels {

bool gemm_f32_available() { return false; }

void gemm_f32(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
              int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  gemm_portable(x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy);
}

}  // namespace fastdecode::kernels

#endif
