// AVX2 int4 GEMV (x86-64 only; qgemv.cpp calls it where the CPU has AVX2 and FMA but not
// AVX-512 VNNI). Exact integer products against the 8-bit activations: the tiled layout's
// lanes are output rows (8 of a tile's 16 per register); each row's word holds 4 low and 4
// high nibbles, which vpmaddubsw multiplies with a broadcast quad of activation bytes into
// two 16-bit sums per lane; a block's sums stay in 16 bits (at most 4 * 2 * 2 * 15 * 127 =
// 30480) until one vpmaddwd by ones widens them. Blocks of 4 activation rows take a whole
// tile at a time (each broadcast feeds 16 rows), the other rows half a tile; both round
// every row the same way.
#include "kernels/qgemv.h"

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int4_layout.h"
#include "kernels/qgemv_avx2_tiles.h"

namespace fastdecode::kernels {
namespace {

// int4, 8 rows (half of a 16-row tile, `rows` <= 8 of them valid) against activation rows
// [m0, m0 + MB), which share each weight load and unpacking. words: the tile's words
// (column-major, `stride` = the tile's row count) from this half's first row; st: its
// scales and zeros likewise. kOneBlock: G == 32, a group is one block, so each block's
// float sum goes straight into the group's arithmetic (no per-group sum register: at 4
// activation rows they would not fit in the 16 ymm registers). prefetch: the first block
// of activation rows streams the weights; the others find them in L1.
template <int MB, bool kOneBlock>
FASTDECODE_AVX2 void int4_half_tile(const QuantizedActivations& a, int64_t m0,
                                    const float* xsum, const uint8_t* words, const float* st,
                                    int64_t stride, int64_t rows, int64_t G, float* y,
                                    int64_t ldy, int64_t n, bool prefetch) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  const int64_t xblocks = K / kActBlock;
  const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256 gacc[MB];
    for (int m = 0; m < MB; ++m) gacc[m] = _mm256_setzero_ps();
    for (int64_t bg = 0; bg < blocks_per_group; ++bg) {
      const int64_t b = g * blocks_per_group + bg;
      __m256i dot16[MB];  // per lane: two 16-bit partial sums of the block's products
      for (int m = 0; m < MB; ++m) dot16[m] = _mm256_setzero_si256();
      for (int64_t j = 0; j < 4; ++j) {
        const uint8_t* wp = words + ((b * 4 + j) * stride) * 4;
        if (prefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(wp) + kPrefetchBytes, _MM_HINT_T0);
        }
        const __m256i w = _mm256_maskload_epi32(reinterpret_cast<const int*>(wp), valid);
        const __m256i lo = _mm256_and_si256(w, nibble);                       // columns 4j..
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);  // 16 + 4j..
        for (int m = 0; m < MB; ++m) {
          const int8_t* xb = a.q + (m0 + m) * K + b * kActBlock + 4 * j;
          int32_t x_lo, x_hi;
          std::memcpy(&x_lo, xb, 4);
          std::memcpy(&x_hi, xb + 16, 4);
          const __m256i d = _mm256_add_epi16(
              _mm256_maddubs_epi16(lo, _mm256_set1_epi32(x_lo)),
              _mm256_maddubs_epi16(hi, _mm256_set1_epi32(x_hi)));
          dot16[m] = _mm256_add_epi16(dot16[m], d);
        }
      }
      for (int m = 0; m < MB; ++m) {
        const __m256i dot = _mm256_madd_epi16(dot16[m], ones);
        const __m256 xs = _mm256_set1_ps(a.scale[(m0 + m) * xblocks + b]);
        // (with one block, the product alone: an fmadd onto zero rounds it the same way)
        gacc[m] = kOneBlock ? _mm256_mul_ps(_mm256_cvtepi32_ps(dot), xs)
                            : _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), xs, gacc[m]);
      }
    }
    // the scales and zeros are a stream of their own, half as long as the weights' (G = 32):
    // without a prefetch their loads missed the cache (a third of the kernel's time)
    if (prefetch) {
      const char* next =
          reinterpret_cast<const char*>(st + (2 * g) * stride) + kPrefetchBytes / 2;
      _mm_prefetch(next, _MM_HINT_T0);
      _mm_prefetch(next + 64, _MM_HINT_T0);
    }
    const __m256 scale = _mm256_maskload_ps(st + (2 * g) * stride, valid);
    const __m256 zero = _mm256_maskload_ps(st + (2 * g + 1) * stride, valid);
    for (int m = 0; m < MB; ++m) {
      const float* sums = xsum + ((m0 + m) * groups + g) * 2;  // sum(x), sum(x_hat)
      const __m256 centred = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), _mm256_set1_ps(sums[1]),
                                              gacc[m]);
      acc[m] = _mm256_fmadd_ps(scale, centred, acc[m]);
      acc[m] = _mm256_fmadd_ps(zero, _mm256_set1_ps(sums[0]), acc[m]);
    }
  }
  for (int m = 0; m < MB; ++m) _mm256_maskstore_ps(y + (m0 + m) * ldy + n, valid, acc[m]);
}

// int4, a whole 16-row tile against 4 activation rows [m0, m0 + 4): the arithmetic of
// int4_half_tile for each of its halves, bit for bit (a row's result never depends on the
// kernel its row block took), with each activation broadcast shared by the 16 rows. The
// 16-bit sums of 4 rows x 16 lanes fill 8 of the 16 ymm registers, so the float part runs
// apart: each block's widened integer sums go to an L1 scratch, and per chunk of
// kTileChunkBlocks blocks (qgemv_avx2_tiles.h) a second loop scales them into the rows'
// accumulators. On Zen 4 at 8 rows, weights in L2: 25.5 products a cycle against the half
// tiles' 19.5.
template <bool kOneBlock>
FASTDECODE_AVX2 void int4_full_tile(const QuantizedActivations& a, int64_t m0,
                                    const float* xsum, const uint8_t* words, const float* st,
                                    int64_t G, float* y, int64_t ldy, int64_t n, bool prefetch) {
  constexpr int MB = 4, kRows = static_cast<int>(kInt4TileRows);
  // kOneBlock: G == 32 as a constant, so no division is left in the loops
  const int64_t K = a.K, blocks = K / kActBlock, groups = kOneBlock ? blocks : K / G;
  const int64_t blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  alignas(32) int32_t dots[kTileChunkBlocks][MB][kRows];  // per block: row m's 16 sums
  alignas(32) float acc_between_chunks[MB][kRows];
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t c0 = 0; c0 < blocks; c0 += kTileChunkBlocks) {
    const int64_t c1 = std::min(blocks, c0 + kTileChunkBlocks);
    for (int64_t b = c0; b < c1; ++b) {
      __m256i dot16[MB][2];  // rows 0-7 and 8-15 of the tile, as int4_half_tile's dot16
      for (int m = 0; m < MB; ++m) dot16[m][0] = dot16[m][1] = _mm256_setzero_si256();
      for (int64_t j = 0; j < 4; ++j) {
        const uint8_t* wp = words + (b * 4 + j) * kRows * 4;
        if (prefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(wp) + kPrefetchBytes, _MM_HINT_T0);
        }
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 32));
        const __m256i lo0 = _mm256_and_si256(w0, nibble);
        const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(w0, 4), nibble);
        const __m256i lo1 = _mm256_and_si256(w1, nibble);
        const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(w1, 4), nibble);
        for (int m = 0; m < MB; ++m) {
          const int8_t* xb = a.q + (m0 + m) * K + b * kActBlock + 4 * j;
          int32_t x_lo, x_hi;
          std::memcpy(&x_lo, xb, 4);
          std::memcpy(&x_hi, xb + 16, 4);
          const __m256i xl = _mm256_set1_epi32(x_lo), xh = _mm256_set1_epi32(x_hi);
          dot16[m][0] = _mm256_add_epi16(dot16[m][0],
                                         _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl),
                                                          _mm256_maddubs_epi16(hi0, xh)));
          dot16[m][1] = _mm256_add_epi16(dot16[m][1],
                                         _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl),
                                                          _mm256_maddubs_epi16(hi1, xh)));
        }
      }
      for (int m = 0; m < MB; ++m) {
        for (int h = 0; h < 2; ++h) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(&dots[b - c0][m][8 * h]),
                             _mm256_madd_epi16(dot16[m][h], ones));
        }
      }
    }
    const int64_t g0 = c0 / blocks_per_group, g1 = c1 / blocks_per_group;
    if (prefetch) {  // this chunk's scales and zeros, as int4_half_tile
      for (int64_t g = g0; g < g1; ++g) {
        const char* next =
            reinterpret_cast<const char*>(st + (2 * g) * kRows) + kPrefetchBytes / 2;
        _mm_prefetch(next, _MM_HINT_T0);
        _mm_prefetch(next + 64, _MM_HINT_T0);
      }
    }
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MB];
      for (int m = 0; m < MB; ++m) {
        acc[m] = c0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(&acc_between_chunks[m][8 * h]);
      }
      for (int64_t g = g0; g < g1; ++g) {
        __m256 gacc[MB];
        for (int m = 0; m < MB; ++m) gacc[m] = _mm256_setzero_ps();
        for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
          for (int m = 0; m < MB; ++m) {
            const __m256 dot = _mm256_cvtepi32_ps(
                _mm256_load_si256(reinterpret_cast<const __m256i*>(&dots[b - c0][m][8 * h])));
            const __m256 xs = _mm256_set1_ps(a.scale[(m0 + m) * blocks + b]);
            gacc[m] = kOneBlock ? _mm256_mul_ps(dot, xs) : _mm256_fmadd_ps(dot, xs, gacc[m]);
          }
        }
        const __m256 scale = _mm256_loadu_ps(st + (2 * g) * kRows + 8 * h);
        const __m256 zero = _mm256_loadu_ps(st + (2 * g + 1) * kRows + 8 * h);
        for (int m = 0; m < MB; ++m) {
          const float* sums = xsum + ((m0 + m) * groups + g) * 2;  // sum(x), sum(x_hat)
          const __m256 centred = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f),
                                                  _mm256_set1_ps(sums[1]), gacc[m]);
          acc[m] = _mm256_fmadd_ps(scale, centred, acc[m]);
          acc[m] = _mm256_fmadd_ps(zero, _mm256_set1_ps(sums[0]), acc[m]);
        }
      }
      for (int m = 0; m < MB; ++m) {
        if (c1 == blocks) {
          _mm256_storeu_ps(y + (m0 + m) * ldy + n + 8 * h, acc[m]);
        } else {
          _mm256_store_ps(&acc_between_chunks[m][8 * h], acc[m]);
        }
      }
    }
  }
}

}  // namespace

FASTDECODE_AVX2 void int4_gemv_avx2(const QuantizedActivations& a, const float* xsum,
                                    const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                                    int64_t t_begin, int64_t t_end, float* y, int64_t ldy) {
  // a tile at a time for every block of activation rows: its words stay in L1 between them
  const int64_t words = a.K / 8, groups = a.K / G;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const uint8_t* pt = packed + n0 * words * 4;
    const float* st = sz + n0 * groups * 2;
    tile_by_row_blocks<4>(
        a.M, r, G == kActBlock,
        [&](int64_t m0, auto one_block, bool prefetch) {
          int4_full_tile<one_block.value>(a, m0, xsum, pt, st, G, y, ldy, n0, prefetch);
        },
        [&](int64_t h, int64_t m0, auto mb, auto one_block, bool prefetch) {
          const int64_t rows = std::min<int64_t>(8, r - 8 * h);
          int4_half_tile<mb.value, one_block.value>(a, m0, xsum, pt + 8 * h * 4, st + 8 * h, r,
                                                    rows, G, y, ldy, n0 + 8 * h, prefetch);
        });
  }
}

}  // namespace fastdecode::kernels

#endif
