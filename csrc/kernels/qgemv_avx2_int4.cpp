// AVX2 int4 GEMV (x86-64 only; qgemv.cpp calls it where the CPU has AVX2 and FMA but not
// AVX-512 VNNI). Exact integer products against the 8-bit activations: the tiled layout's
// lanes are output rows (8 of a tile's 16 per register); each row's word holds 4 low and 4
// high nibbles, which vpmaddubsw multiplies with a broadcast quad of activation bytes into
// two 16-bit sums per lane; a block's sums stay in 16 bits (at most 4 * 2 * 2 * 15 * 127 =
// 30480) until one vpmaddwd by ones widens them and 8 * sum(xq) comes off (the centred
// weights' exact integer sum, qgemv.h). Blocks of 4 activation rows take a whole tile at a
// time (each broadcast feeds 16 rows), the other rows half a tile; both round every row the
// same way: per group gacc = sum_b s_b * dot_b, acc += scale * gacc, and after the last
// group the zero points' sum over the groups, added once.
#include "kernels/qgemv.h"

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int4_layout.h"
#include "kernels/qgemv_avx2_tiles.h"

namespace fastdecode::kernels {
namespace {

// The zero points' term of 8 rows (valid: the rows that exist) against activation rows
// [m0, m0 + MB): acc[m] + sum_g zero_g * sum(x_g), the sum accumulated from zero in group
// order (qgemv.h), into y. zeros: the group's 8 zeros at zeros + g * zero_stride. For the
// whole tile, after its last chunk; the half tile accumulates the same sums in its group
// loop (a second pass cost a one-row GEMV ~8% with its weights streaming from memory).
template <int MB>
FASTDECODE_AVX2 inline void int4_add_zero_terms(const float* xsum, int64_t m0, int64_t groups,
                                                const float* zeros, int64_t zero_stride,
                                                __m256i valid, const __m256 (&acc)[MB],
                                                float* y, int64_t ldy) {
  __m256 zacc[MB];
  for (int m = 0; m < MB; ++m) zacc[m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const __m256 zero = _mm256_maskload_ps(zeros + g * zero_stride, valid);
    for (int m = 0; m < MB; ++m) {
      zacc[m] = _mm256_fmadd_ps(zero, _mm256_set1_ps(xsum[(m0 + m) * groups + g]), zacc[m]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    _mm256_maskstore_ps(y + (m0 + m) * ldy, valid, _mm256_add_ps(acc[m], zacc[m]));
  }
}

// int4, 8 rows (half of a 16-row tile, `rows` <= 8 of them valid) against activation rows
// [m0, m0 + MB), which share each weight load and unpacking. words: the tile's words
// (column-major, `stride` = the tile's row count) from this half's first row; st: its
// scales and zeros likewise. kOneBlock: G == 32, a group is one block, so each block's
// float sum goes straight into the group's arithmetic. prefetch: the first block of
// activation rows streams the weights; the others find them in L1.
template <int MB, bool kOneBlock>
FASTDECODE_AVX2 void int4_half_tile(const QuantizedActivations& a, int64_t m0,
                                    const int32_t* bsum, const float* xsum,
                                    const uint8_t* words, const float* st, int64_t stride,
                                    int64_t rows, int64_t G, float* y, int64_t ldy, int64_t n,
                                    bool prefetch) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  const int64_t xblocks = K / kActBlock;
  const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MB], zacc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = zacc[m] = _mm256_setzero_ps();
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
        const int64_t xb = (m0 + m) * xblocks + b;
        const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(dot16[m], ones),
                                             _mm256_set1_epi32(8 * bsum[xb]));
        const __m256 xs = _mm256_set1_ps(a.scale[xb]);
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
      acc[m] = _mm256_fmadd_ps(scale, gacc[m], acc[m]);
      zacc[m] = _mm256_fmadd_ps(zero, _mm256_set1_ps(xsum[(m0 + m) * groups + g]), zacc[m]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    _mm256_maskstore_ps(y + n + (m0 + m) * ldy, valid, _mm256_add_ps(acc[m], zacc[m]));
  }
}

// One block (32 columns) of a whole tile against 4 activation rows: dot16[m][h], the 16-bit
// sums of row m's products with rows 8h..8h+7 of the tile, as int4_half_tile's dot16. wp:
// the block's 4 quads of 16 words; xb: row 0's 32 activation bytes (row m at xb + m * K).
// One asm block, as int8_tile_block_sums (qgemv_avx2_int8.cpp): the 8 sums, 4 unpacked
// weight registers, 2 broadcasts and a product take 15 of the 16 ymm registers (the nibble
// mask is read from memory), where GCC's code for the same intrinsics spilled sums to the
// stack. The sums do not wrap (at most 4 * 2 * 2 * 15 * 127 = 30480), so their order is free.
FASTDECODE_AVX2 __attribute__((always_inline)) inline void int4_tile_block_sums(
    const uint8_t* wp, const int8_t* xb, int64_t K, __m256i (&dot16)[4][2]) {
  alignas(32) static const uint8_t kNibble[32] = {
      15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
      15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15};
  const int8_t *x0 = xb, *x1 = xb + K, *x2 = xb + 2 * K, *x3 = xb + 3 * K;
  __m256i lo0, lo1, hi0, hi1, xl, xh, t;
#define FASTDECODE_ROW(j, xp, d0, d1)                       \
  "vpbroadcastd " #j "*4(%[" xp "]), %[xl]\n\t"             \
  "vpbroadcastd " #j "*4+16(%[" xp "]), %[xh]\n\t"          \
  "vpmaddubsw %[xl], %[lo0], %[t]\n\t"                      \
  "vpaddw %[t], %[" d0 "], %[" d0 "]\n\t"                   \
  "vpmaddubsw %[xh], %[hi0], %[t]\n\t"                      \
  "vpaddw %[t], %[" d0 "], %[" d0 "]\n\t"                   \
  "vpmaddubsw %[xl], %[lo1], %[t]\n\t"                      \
  "vpaddw %[t], %[" d1 "], %[" d1 "]\n\t"                   \
  "vpmaddubsw %[xh], %[hi1], %[t]\n\t"                      \
  "vpaddw %[t], %[" d1 "], %[" d1 "]\n\t"
#define FASTDECODE_QUAD(j)                                  \
  "vmovdqu " #j "*64(%[wp]), %[lo0]\n\t"                    \
  "vmovdqu " #j "*64+32(%[wp]), %[lo1]\n\t"                 \
  "vpsrlw $4, %[lo0], %[hi0]\n\t"                           \
  "vpsrlw $4, %[lo1], %[hi1]\n\t"                           \
  "vpand %[nib], %[lo0], %[lo0]\n\t"                        \
  "vpand %[nib], %[lo1], %[lo1]\n\t"                        \
  "vpand %[nib], %[hi0], %[hi0]\n\t"                        \
  "vpand %[nib], %[hi1], %[hi1]\n\t"                        \
  FASTDECODE_ROW(j, "x0", "d00", "d01")                     \
  FASTDECODE_ROW(j, "x1", "d10", "d11")                     \
  FASTDECODE_ROW(j, "x2", "d20", "d21")                     \
  FASTDECODE_ROW(j, "x3", "d30", "d31")
  asm("vpxor %[d00], %[d00], %[d00]\n\t"
      "vpxor %[d01], %[d01], %[d01]\n\t"
      "vpxor %[d10], %[d10], %[d10]\n\t"
      "vpxor %[d11], %[d11], %[d11]\n\t"
      "vpxor %[d20], %[d20], %[d20]\n\t"
      "vpxor %[d21], %[d21], %[d21]\n\t"
      "vpxor %[d30], %[d30], %[d30]\n\t"
      "vpxor %[d31], %[d31], %[d31]\n\t"
      FASTDECODE_QUAD(0) FASTDECODE_QUAD(1) FASTDECODE_QUAD(2) FASTDECODE_QUAD(3)
      : [d00] "=&x"(dot16[0][0]), [d01] "=&x"(dot16[0][1]), [d10] "=&x"(dot16[1][0]),
        [d11] "=&x"(dot16[1][1]), [d20] "=&x"(dot16[2][0]), [d21] "=&x"(dot16[2][1]),
        [d30] "=&x"(dot16[3][0]), [d31] "=&x"(dot16[3][1]), [lo0] "=&x"(lo0),
        [lo1] "=&x"(lo1), [hi0] "=&x"(hi0), [hi1] "=&x"(hi1), [xl] "=&x"(xl), [xh] "=&x"(xh),
        [t] "=&x"(t)
      : [wp] "r"(wp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3),
        [nib] "m"(kNibble)
      : "memory");
#undef FASTDECODE_QUAD
#undef FASTDECODE_ROW
}

// int4, a whole 16-row tile against 4 activation rows [m0, m0 + 4): the arithmetic of
// int4_half_tile for each of its halves, bit for bit (a row's result never depends on the
// kernel its row block took), with each activation broadcast shared by the 16 rows. The
// 16-bit sums of 4 rows x 16 lanes fill 8 of the 16 ymm registers, so the float part runs
// apart: each block's centred integer sums go to an L1 scratch, and per chunk of
// kTileChunkBlocks blocks (qgemv_avx2_tiles.h) a second loop scales them into the rows'
// accumulators, both halves at once (8 independent fmadd chains).
template <bool kOneBlock>
FASTDECODE_AVX2 void int4_full_tile(const QuantizedActivations& a, int64_t m0,
                                    const int32_t* bsum, const float* xsum,
                                    const uint8_t* words, const float* st, int64_t G, float* y,
                                    int64_t ldy, int64_t n, bool prefetch) {
  constexpr int MB = 4, kRows = static_cast<int>(kInt4TileRows);
  // kOneBlock: G == 32 as a constant, so no division is left in the loops
  const int64_t K = a.K, blocks = K / kActBlock, groups = kOneBlock ? blocks : K / G;
  const int64_t blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  alignas(32) int32_t dots[kTileChunkBlocks][MB][kRows];  // per block: row m's 16 sums
  __m256 acc[MB][2];  // rows 0-7 and 8-15 of the tile
  for (int m = 0; m < MB; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t c0 = 0; c0 < blocks; c0 += kTileChunkBlocks) {
    const int64_t c1 = std::min(blocks, c0 + kTileChunkBlocks);
    for (int64_t b = c0; b < c1; ++b) {
      const uint8_t* wp = words + b * 4 * kRows * 4;  // the block's 4 quads x 16 rows
      if (prefetch) {
        for (int j = 0; j < 4; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(wp) + 64 * j + kPrefetchBytes,
                       _MM_HINT_T0);
        }
      }
      __m256i dot16[MB][2];  // rows 0-7 and 8-15 of the tile, as int4_half_tile's dot16
      int4_tile_block_sums(wp, a.q + m0 * K + b * kActBlock, K, dot16);
      for (int m = 0; m < MB; ++m) {
        const __m256i centre = _mm256_set1_epi32(8 * bsum[(m0 + m) * blocks + b]);
        for (int h = 0; h < 2; ++h) {
          _mm256_store_si256(
              reinterpret_cast<__m256i*>(&dots[b - c0][m][8 * h]),
              _mm256_sub_epi32(_mm256_madd_epi16(dot16[m][h], ones), centre));
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
    for (int64_t g = g0; g < g1; ++g) {
      const __m256 scale[2] = {_mm256_loadu_ps(st + (2 * g) * kRows),
                               _mm256_loadu_ps(st + (2 * g) * kRows + 8)};
      for (int m = 0; m < MB; ++m) {
        for (int h = 0; h < 2; ++h) {  // one row's group sum at a time: no spilled registers
          __m256 gacc = _mm256_setzero_ps();
          for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
            const __m256 dot = _mm256_cvtepi32_ps(
                _mm256_load_si256(reinterpret_cast<const __m256i*>(&dots[b - c0][m][8 * h])));
            const __m256 xs = _mm256_set1_ps(a.scale[(m0 + m) * blocks + b]);
            gacc = kOneBlock ? _mm256_mul_ps(dot, xs) : _mm256_fmadd_ps(dot, xs, gacc);
          }
          acc[m][h] = _mm256_fmadd_ps(scale[h], gacc, acc[m][h]);
        }
      }
    }
  }
  const __m256i all = _mm256_set1_epi32(-1);
  for (int h = 0; h < 2; ++h) {
    const __m256 acc_h[MB] = {acc[0][h], acc[1][h], acc[2][h], acc[3][h]};
    int4_add_zero_terms<MB>(xsum, m0, groups, st + kRows + 8 * h, 2 * kRows, all, acc_h,
                            y + n + 8 * h, ldy);
  }
}

}  // namespace

FASTDECODE_AVX2 void int4_gemv_avx2(const QuantizedActivations& a, const int32_t* bsum,
                                    const float* xsum, const uint8_t* packed, const float* sz,
                                    int64_t N, int64_t G, int64_t t_begin, int64_t t_end,
                                    float* y, int64_t ldy) {
  // a tile at a time for every block of activation rows: its words stay in L1 between them
  const int64_t words = a.K / 8, groups = a.K / G;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const uint8_t* pt = packed + n0 * words * 4;
    const float* st = sz + n0 * groups * 2;
    tile_by_row_blocks<4>(
        a.M, r, G == kActBlock,
        [&](int64_t m0, auto one_block, bool prefetch) {
          int4_full_tile<one_block.value>(a, m0, bsum, xsum, pt, st, G, y, ldy, n0, prefetch);
        },
        [&](int64_t h, int64_t m0, auto mb, auto one_block, bool prefetch) {
          const int64_t rows = std::min<int64_t>(8, r - 8 * h);
          int4_half_tile<mb.value, one_block.value>(a, m0, bsum, xsum, pt + 8 * h * 4, st + 8 * h,
                                                    r, rows, G, y, ldy, n0 + 8 * h, prefetch);
        });
  }
}

}  // namespace fastdecode::kernels

#endif
