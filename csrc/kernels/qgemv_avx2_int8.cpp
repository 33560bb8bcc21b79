// AVX2 int8 GEMVs (x86-64 only; qgemv.cpp calls them where the CPU has AVX2 and FMA but not
// AVX-512 VNNI). Exact integer products against the 8-bit activations.
//   Row-major weights: vpmaddwd (two 16-bit products per int32 lane): each 32-value block's
//   weights and activations sign-extended to two registers of 16 int16, the lanes converted
//   to float (exact: |lane| < 2^24) and scaled into a float accumulator; several weight rows
//   and activation rows share each load.
//   Tiled weights (bytes q + 128): vpmaddubsw on the bytes as stored against the split
//   activations (split_activations) where blocks of 2 activation rows take a whole tile at
//   a time (its integer loop one asm block: int8_tile_block_sums), on the bytes' nibbles
//   against the activations, as the int4 kernel (qgemv_avx2_int4.cpp), for the other rows'
//   half tiles; both give the same integers and round every row the same way.
#include "kernels/qgemv.h"

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/avx2_sum.h"
#include "kernels/int4_layout.h"
#include "kernels/qgemv_avx2_tiles.h"

namespace fastdecode::kernels {
namespace {

// R weight rows starting at n against activation rows [m0, m0 + MB): R * MB independent
// accumulators (one accumulator's fmadd chain would wait ~4 cycles a block), and each block
// of activations and its scale loaded once for the R rows.
template <int R, int MB>
FASTDECODE_AVX2 void int8_rows(const QuantizedActivations& a, int64_t m0, const int8_t* q,
                               const float* scales, int64_t K, int64_t G, int64_t n, float* y,
                               int64_t ldy) {
  const bool per_channel = G == K;
  const int64_t groups = K / G, full = K / kActBlock, blocks = (K + kActBlock - 1) / kActBlock;
  const int64_t xblocks = a.K / kActBlock;
  // blocks per scale: a group, or every full block when the scale is per channel
  const int64_t per_scale = per_channel ? std::max<int64_t>(full, 1) : G / kActBlock;
  __m256 acc[R][MB];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm256_setzero_ps();
  }
  for (int64_t g = 0, b0 = 0; b0 < full; ++g, b0 += per_scale) {  // no division per block
    float sw[R];
    for (int r = 0; r < R; ++r) sw[r] = per_channel ? 1.0f : scales[(n + r) * groups + g];
    const int64_t b1 = std::min(full, b0 + per_scale);
    for (int64_t b = b0; b < b1; ++b) {
      __m256i w_lo[R], w_hi[R];
      for (int r = 0; r < R; ++r) {
        const int8_t* wb = q + (n + r) * K + b * kActBlock;
        _mm_prefetch(reinterpret_cast<const char*>(wb) + kPrefetchBytes, _MM_HINT_T0);
        const __m256i w8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb));
        w_lo[r] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w8));
        w_hi[r] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w8, 1));
      }
      for (int m = 0; m < MB; ++m) {
        const int8_t* xb = a.q + (m0 + m) * a.K + b * kActBlock;
        const __m256i x8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb));
        const __m256i x_lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x8));
        const __m256i x_hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x8, 1));
        const float xs = a.scale[(m0 + m) * xblocks + b];
        for (int r = 0; r < R; ++r) {
          const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(w_lo[r], x_lo),
                                               _mm256_madd_epi16(w_hi[r], x_hi));
          acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(xs * sw[r]),
                                      acc[r][m]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const int8_t* qn = q + (n + r) * K;
    for (int m = 0; m < MB; ++m) {
      float total = sum_lanes(acc[r][m]);
      if (full < blocks) {  // a partial last block: the row ends before 32 values
        const int64_t k0 = full * kActBlock;
        const int8_t* xb = a.q + (m0 + m) * a.K + k0;
        int32_t dot = 0;
        for (int64_t k = k0; k < K; ++k) dot += int32_t{qn[k]} * int32_t{xb[k - k0]};
        const float sw = per_channel ? 1.0f : scales[(n + r) * groups + k0 / G];
        total += a.scale[(m0 + m) * xblocks + full] * sw * static_cast<float>(dot);
      }
      y[(m0 + m) * ldy + n + r] = per_channel ? scales[n + r] * total : total;
    }
  }
}

// Rows [n_begin, n_end) in steps of R against activation rows [m0, m0 + MB).
template <int R, int MB>
FASTDECODE_AVX2 void int8_block_rows(const QuantizedActivations& a, int64_t m0,
                                     const int8_t* q, const float* scales, int64_t K, int64_t G,
                                     int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) int8_rows<R, MB>(a, m0, q, scales, K, G, n, y, ldy);
  for (; n < n_end; ++n) int8_rows<1, MB>(a, m0, q, scales, K, G, n, y, ldy);
}

// int8, tiled layout (int8_layout.h), 8 rows of a tile as int4_half_tile
// (qgemv_avx2_int4.cpp): each lane's word
// is four columns of one row as bytes u = q + 128. vpmaddubsw's pair sums of u * xq could
// overflow 16 bits (2 * 255 * 127), so u is split into nibbles (u = 16 hi + lo) and each
// half summed over the block in 16 bits (at most 8 * 2 * 15 * 127 = 30480), widened by
// vpmaddwd with 1 and 16. kOneBlock and prefetch: as int4_half_tile.
template <int MB, bool kOneBlock>
FASTDECODE_AVX2 void int8_half_tile(const QuantizedActivations& a, int64_t m0,
                                    const int32_t* bsum, const uint8_t* words, const float* st,
                                    int64_t stride, int64_t rows, int64_t G, float* y,
                                    int64_t ldy, int64_t n, bool prefetch) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  const int64_t blocks = K / kActBlock;
  const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16);
  __m256 acc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256 gacc[MB];
    for (int m = 0; m < MB; ++m) gacc[m] = _mm256_setzero_ps();
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      __m256i lo16[MB], hi16[MB];
      for (int m = 0; m < MB; ++m) lo16[m] = hi16[m] = _mm256_setzero_si256();
      for (int64_t j = 0; j < 8; ++j) {
        const uint8_t* wp = words + ((b * 8 + j) * stride) * 4;
        if (prefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(wp) + kPrefetchBytes, _MM_HINT_T0);
        }
        const __m256i w = _mm256_maskload_epi32(reinterpret_cast<const int*>(wp), valid);
        const __m256i lo = _mm256_and_si256(w, nibble);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);
        for (int m = 0; m < MB; ++m) {
          int32_t quad;
          std::memcpy(&quad, a.q + (m0 + m) * K + b * kActBlock + 4 * j, 4);
          const __m256i x = _mm256_set1_epi32(quad);
          lo16[m] = _mm256_add_epi16(lo16[m], _mm256_maddubs_epi16(lo, x));
          hi16[m] = _mm256_add_epi16(hi16[m], _mm256_maddubs_epi16(hi, x));
        }
      }
      for (int m = 0; m < MB; ++m) {
        const int64_t xb = (m0 + m) * blocks + b;
        __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(lo16[m], ones),
                                       _mm256_madd_epi16(hi16[m], sixteens));
        dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(128 * bsum[xb]));
        const __m256 xs = _mm256_set1_ps(a.scale[xb]);
        gacc[m] = kOneBlock ? _mm256_mul_ps(_mm256_cvtepi32_ps(dot), xs)
                            : _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), xs, gacc[m]);
      }
    }
    if (prefetch) {
      const char* next = reinterpret_cast<const char*>(st + g * stride) + kPrefetchBytes / 8;
      _mm_prefetch(next, _MM_HINT_T0);
    }
    const __m256 scale = _mm256_maskload_ps(st + g * stride, valid);
    for (int m = 0; m < MB; ++m) acc[m] = _mm256_fmadd_ps(scale, gacc[m], acc[m]);
  }
  for (int m = 0; m < MB; ++m) _mm256_maskstore_ps(y + (m0 + m) * ldy + n, valid, acc[m]);
}

// One block (32 columns) of a whole tile against 2 activation rows: lo16[m][h] and
// hi16[m][h], the 16-bit sums of the products of rows 8h..8h+7's bytes u with row m's lo and
// hi split activations (split_activations, qgemv.h), so that the block's u . xq is
// madd(lo16, 1) + madd(hi16, 16): the same integers as int8_half_tile's, whose nibble split
// of u gives the same sum. The bytes go into vpmaddubsw as loaded, with no unpacking (on
// Zen 4 ~20% faster than splitting u: 16 vector instructions per quad and 2 rows against
// 22). wp: the block's 8 quads of 16 words; xs: row 0's 32 lo values (its hi values at
// xs + K, row 1's at xs + 2K and xs + 3K). Each sum stays within 16 bits (8 quads * 2 * 255
// * 8 = 32640). One asm block, as GCC's code for the same intrinsics rotated the sums
// through register copies and a stack slot: the 8 sums, 2 weight registers, 2 broadcasts
// and 2 products take 14 of the 16 ymm registers.
FASTDECODE_AVX2 __attribute__((always_inline)) inline void int8_tile_block_sums(
    const uint8_t* wp, const int8_t* xs, int64_t K, __m256i (&lo16)[2][2],
    __m256i (&hi16)[2][2]) {
  const int8_t *lo_0 = xs, *hi_0 = xs + K, *lo_1 = xs + 2 * K, *hi_1 = xs + 3 * K;
  __m256i w0, w1, xl, xh, t, u;
#define FASTDECODE_ROW(j, lp, hp, l0, l1, h0, h1)           \
  "vpbroadcastd " #j "*4(%[" lp "]), %[xl]\n\t"             \
  "vpbroadcastd " #j "*4(%[" hp "]), %[xh]\n\t"             \
  "vpmaddubsw %[xl], %[w0], %[t]\n\t"                       \
  "vpmaddubsw %[xl], %[w1], %[u]\n\t"                       \
  "vpaddw %[t], %[" l0 "], %[" l0 "]\n\t"                   \
  "vpaddw %[u], %[" l1 "], %[" l1 "]\n\t"                   \
  "vpmaddubsw %[xh], %[w0], %[t]\n\t"                       \
  "vpmaddubsw %[xh], %[w1], %[u]\n\t"                       \
  "vpaddw %[t], %[" h0 "], %[" h0 "]\n\t"                   \
  "vpaddw %[u], %[" h1 "], %[" h1 "]\n\t"
#define FASTDECODE_QUAD(j)                                  \
  "vmovdqu " #j "*64(%[wp]), %[w0]\n\t"                     \
  "vmovdqu " #j "*64+32(%[wp]), %[w1]\n\t"                  \
  FASTDECODE_ROW(j, "lo_0", "hi_0", "l00", "l01", "h00", "h01") \
  FASTDECODE_ROW(j, "lo_1", "hi_1", "l10", "l11", "h10", "h11")
  asm("vpxor %[l00], %[l00], %[l00]\n\t"
      "vpxor %[l01], %[l01], %[l01]\n\t"
      "vpxor %[h00], %[h00], %[h00]\n\t"
      "vpxor %[h01], %[h01], %[h01]\n\t"
      "vpxor %[l10], %[l10], %[l10]\n\t"
      "vpxor %[l11], %[l11], %[l11]\n\t"
      "vpxor %[h10], %[h10], %[h10]\n\t"
      "vpxor %[h11], %[h11], %[h11]\n\t"
      FASTDECODE_QUAD(0) FASTDECODE_QUAD(1) FASTDECODE_QUAD(2) FASTDECODE_QUAD(3)
      FASTDECODE_QUAD(4) FASTDECODE_QUAD(5) FASTDECODE_QUAD(6) FASTDECODE_QUAD(7)
      : [l00] "=&x"(lo16[0][0]), [l01] "=&x"(lo16[0][1]), [h00] "=&x"(hi16[0][0]),
        [h01] "=&x"(hi16[0][1]), [l10] "=&x"(lo16[1][0]), [l11] "=&x"(lo16[1][1]),
        [h10] "=&x"(hi16[1][0]), [h11] "=&x"(hi16[1][1]), [w0] "=&x"(w0), [w1] "=&x"(w1),
        [xl] "=&x"(xl), [xh] "=&x"(xh), [t] "=&x"(t), [u] "=&x"(u)
      : [wp] "r"(wp), [lo_0] "r"(lo_0), [hi_0] "r"(hi_0), [lo_1] "r"(lo_1), [hi_1] "r"(hi_1)
      : "memory");
#undef FASTDECODE_QUAD
#undef FASTDECODE_ROW
}

// int8, a whole 16-row tile against 2 activation rows [m0, m0 + 2): int8_half_tile's
// arithmetic for each half, bit for bit, with each broadcast quad feeding 16 rows; the 16-bit
// sums (lo and hi split activations, two halves, two rows) take 8 registers, so the float
// part runs apart as in int4_full_tile (qgemv_avx2_int4.cpp). a.split: split_activations
// of a.q. On Zen 4 at 8 rows, the default model's head (49152 x 576, weights from memory):
// 16.7 against 14.5 products a cycle with the bytes' nibbles split instead.
template <bool kOneBlock>
FASTDECODE_AVX2 void int8_full_tile(const QuantizedActivations& a, int64_t m0,
                                    const int32_t* bsum, const uint8_t* words, const float* st,
                                    int64_t G, float* y, int64_t ldy, int64_t n, bool prefetch) {
  constexpr int MB = 2, kRows = static_cast<int>(kInt4TileRows);
  const int64_t K = a.K, blocks = K / kActBlock;
  const int64_t blocks_per_group = kOneBlock ? 1 : G / kActBlock;  // G == K: per channel
  alignas(32) int32_t dots[kTileChunkBlocks][MB][kRows];
  // a group may span chunks (per channel): its partial sum waits here with the total's
  alignas(32) float acc_between_chunks[MB][kRows], gacc_between_chunks[MB][kRows];
  const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16);
  for (int64_t c0 = 0; c0 < blocks; c0 += kTileChunkBlocks) {
    const int64_t c1 = std::min(blocks, c0 + kTileChunkBlocks);
    for (int64_t b = c0; b < c1; ++b) {
      const uint8_t* wp = words + b * 8 * kRows * 4;  // the block's 8 quads x 16 rows
      if (prefetch) {
        for (int j = 0; j < 8; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(wp) + 64 * j + kPrefetchBytes,
                       _MM_HINT_T0);
        }
      }
      __m256i lo16[MB][2], hi16[MB][2];
      int8_tile_block_sums(wp, a.split + 2 * m0 * K + b * kActBlock, K, lo16, hi16);
      for (int m = 0; m < MB; ++m) {
        const __m256i offset = _mm256_set1_epi32(128 * bsum[(m0 + m) * blocks + b]);
        for (int h = 0; h < 2; ++h) {
          const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(lo16[m][h], ones),
                                               _mm256_madd_epi16(hi16[m][h], sixteens));
          _mm256_store_si256(reinterpret_cast<__m256i*>(&dots[b - c0][m][8 * h]),
                             _mm256_sub_epi32(dot, offset));
        }
      }
    }
    if (prefetch) {  // this chunk's scales, as int8_half_tile
      for (int64_t g = c0 / blocks_per_group; g <= (c1 - 1) / blocks_per_group; ++g) {
        _mm_prefetch(reinterpret_cast<const char*>(st + g * kRows) + kPrefetchBytes / 8,
                     _MM_HINT_T0);
      }
    }
    for (int h = 0; h < 2; ++h) {
      __m256 acc[MB], gacc[MB];
      for (int m = 0; m < MB; ++m) {
        const bool first = c0 == 0;
        acc[m] = first ? _mm256_setzero_ps() : _mm256_load_ps(&acc_between_chunks[m][8 * h]);
        gacc[m] = first || kOneBlock ? _mm256_setzero_ps()
                                     : _mm256_load_ps(&gacc_between_chunks[m][8 * h]);
      }
      for (int64_t b = c0; b < c1; ++b) {
        for (int m = 0; m < MB; ++m) {
          const __m256 dot = _mm256_cvtepi32_ps(
              _mm256_load_si256(reinterpret_cast<const __m256i*>(&dots[b - c0][m][8 * h])));
          const __m256 xs = _mm256_set1_ps(a.scale[(m0 + m) * blocks + b]);
          gacc[m] = kOneBlock ? _mm256_mul_ps(dot, xs) : _mm256_fmadd_ps(dot, xs, gacc[m]);
        }
        if ((b + 1) % blocks_per_group == 0) {  // the group's last block
          const __m256 scale = _mm256_loadu_ps(st + (b / blocks_per_group) * kRows + 8 * h);
          for (int m = 0; m < MB; ++m) {
            acc[m] = _mm256_fmadd_ps(scale, gacc[m], acc[m]);
            gacc[m] = _mm256_setzero_ps();
          }
        }
      }
      for (int m = 0; m < MB; ++m) {
        if (c1 == blocks) {
          _mm256_storeu_ps(y + (m0 + m) * ldy + n + 8 * h, acc[m]);
        } else {
          _mm256_store_ps(&acc_between_chunks[m][8 * h], acc[m]);
          if (!kOneBlock) _mm256_store_ps(&gacc_between_chunks[m][8 * h], gacc[m]);
        }
      }
    }
  }
}

}  // namespace

FASTDECODE_AVX2 void int8_gemv_avx2(const QuantizedActivations& a, const int8_t* q,
                                    const float* scales, int64_t K, int64_t G, int64_t n_begin,
                                    int64_t n_end, float* y, int64_t ldy) {
  // R weight rows x MB activation rows per pass, R * MB <= 4: more accumulators spill
  int64_t m0 = 0;
  for (; m0 + 4 <= a.M; m0 += 4) {
    int8_block_rows<1, 4>(a, m0, q, scales, K, G, n_begin, n_end, y, ldy);
  }
  switch (a.M - m0) {
    case 3: int8_block_rows<1, 3>(a, m0, q, scales, K, G, n_begin, n_end, y, ldy); break;
    case 2: int8_block_rows<2, 2>(a, m0, q, scales, K, G, n_begin, n_end, y, ldy); break;
    case 1: int8_block_rows<4, 1>(a, m0, q, scales, K, G, n_begin, n_end, y, ldy); break;
    default: break;
  }
}

FASTDECODE_AVX2 void int8_tiled_gemv_avx2(const QuantizedActivations& a, const int32_t* bsum,
                                          const uint8_t* packed, const float* scales, int64_t N,
                                          int64_t G, int64_t t_begin, int64_t t_end, float* y,
                                          int64_t ldy) {
  // as int4_gemv_avx2, whole tiles for blocks of 2 rows
  const int64_t K = a.K, groups = K / G;
  std::vector<int8_t> own_split;  // where the caller passed no split_activations
  QuantizedActivations as = a;
  if (as.split == nullptr && a.M >= 2) {  // (the whole tiles take blocks of 2 rows)
    own_split.resize(2 * a.M * K);
    split_activations(a, own_split.data());
    as.split = own_split.data();
  }
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const uint8_t* pt = packed + n0 * K;
    const float* st = scales + n0 * groups;
    tile_by_row_blocks<2>(
        a.M, r, G == kActBlock,
        [&](int64_t m0, auto one_block, bool prefetch) {
          int8_full_tile<one_block.value>(as, m0, bsum, pt, st, G, y, ldy, n0, prefetch);
        },
        [&](int64_t h, int64_t m0, auto mb, auto one_block, bool prefetch) {
          const int64_t rows = std::min<int64_t>(8, r - 8 * h);
          int8_half_tile<mb.value, one_block.value>(a, m0, bsum, pt + 8 * h * 4, st + 8 * h, r,
                                                    rows, G, y, ldy, n0 + 8 * h, prefetch);
        });
  }
}

}  // namespace fastdecode::kernels

#endif
