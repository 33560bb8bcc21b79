// AVX-512 kernels for the quantized GEMVs (x86-64 only; qgemv.cpp calls them where the CPU
// has avx512_vnni). vpdpbusd adds four unsigned-by-signed byte products into each of 16
// int32 lanes: int4 nibbles by the 8-bit activations, and for int8 the activations made
// unsigned (sign bit flipped) by the weight bytes.
#include "kernels/qgemv.h"

#if FASTDECODE_X86_CLONES

#include <immintrin.h>

#include <algorithm>
#include <cstring>

// GCC 12's AVX-512 headers start broadcasts and conversions from _mm512_undefined_*(), which
// -Wall reports as uninitialised once inlined here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/int4_layout.h"
#include "kernels/row_blocks.h"

#define FASTDECODE_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace fastdecode::kernels {
namespace {

// Software prefetch distance along a task's weight stream. The hardware prefetcher alone
// streams tiles at ~8 GB/s a core here; 2 KiB ahead gave ~42 GB/s, 8 KiB ~50 GB/s (one
// thread, 40 MB of int4 weights cycled; 12-32 KiB was slower again).
constexpr int64_t kPrefetchBytes = 8192;

// The first kPrefetchBytes of a stream, which the in-loop prefetches never cover.
FASTDECODE_VNNI inline void prefetch_head(const void* begin, int64_t bytes) {
  const char* p = static_cast<const char*>(begin);
  for (int64_t off = 0; off < std::min(bytes, kPrefetchBytes); off += 64) {
    _mm_prefetch(p + off, _MM_HINT_T0);
  }
}

// Four activation bytes (columns k..k+3) in all 16 lanes.
FASTDECODE_VNNI inline __m512i broadcast_quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// int4, tiled layout: the 16 int32 lanes are the 16 rows of a tile, so nothing is summed
// across lanes. A 64-byte load holds, per row, bytes b0..b3 = columns 4j..4j+3 (low nibbles)
// and 16+4j..16+4j+3 (high nibbles) of a 32-column block: masked, the nibbles are unsigned
// bytes that vpdpbusd multiplies with four signed activation bytes at once. MB activation
// rows share each weight load.
//
// kOneBlock: G == 32, a group is one block, so each block's float sum goes straight into the
// accumulator (no per-group sum: at 8 rows its 8 registers made the compiler spill).
template <int MB, bool kOneBlock>
FASTDECODE_VNNI void int4_tile(const QuantizedActivations& a, int64_t m0,
                               const int32_t* bsum, const float* xsum, const int32_t* wt,
                               const float* st, int64_t r, int64_t G, float* y, int64_t ldy,
                               bool prefetch) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  const __mmask16 rows = static_cast<__mmask16>((1u << r) - 1u);
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  __m512 acc[MB];
  #pragma GCC unroll 16
  for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 gacc[MB];
    #pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) gacc[m] = _mm512_setzero_ps();
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      // per activation row the low and the high nibbles' products: two chains of four
      // vpdpbusd below 4 rows, one of eight from 4 (the rows' chains then cover the
      // instruction's latency, and the registers go to 8 rows sharing each weight load)
      constexpr int C = MB >= 4 ? 1 : 2;
      __m512i dot[MB][C];
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        #pragma GCC unroll 16
        for (int c = 0; c < C; ++c) dot[m][c] = _mm512_setzero_si512();
      }
      if (prefetch) {  // the tiles of a task are one contiguous stream
        const char* next = reinterpret_cast<const char*>(wt + b * 4 * r) + kPrefetchBytes;
        for (int j = 0; j < 4; ++j) _mm_prefetch(next + 64 * j, _MM_HINT_T0);
      }
      for (int j = 0; j < 4; ++j) {
        const __m512i w = _mm512_maskz_loadu_epi32(rows, wt + (b * 4 + j) * r);
        const __m512i lo = _mm512_and_si512(w, nibble);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), nibble);
        #pragma GCC unroll 16
        for (int m = 0; m < MB; ++m) {
          const int64_t k = (m0 + m) * K + b * kActBlock + 4 * j;
          dot[m][0] = _mm512_dpbusd_epi32(dot[m][0], lo, broadcast_quad(a.q + k));
          dot[m][C - 1] = _mm512_dpbusd_epi32(dot[m][C - 1], hi, broadcast_quad(a.q + k + 16));
        }
      }
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        const int64_t xb = (m0 + m) * (K / kActBlock) + b;
        const __m512 xs = _mm512_set1_ps(a.scale[xb]);
        // the centred weights' sum (qgemv.h): q . xq - 8 * sum(xq), exact
        const __m512i sum = _mm512_sub_epi32(
            C == 2 ? _mm512_add_epi32(dot[m][0], dot[m][C - 1]) : dot[m][0],
            _mm512_set1_epi32(8 * bsum[xb]));
        // (with one block, fmadd onto zero: the same single rounding as the product)
        gacc[m] = kOneBlock ? _mm512_mul_ps(_mm512_cvtepi32_ps(sum), xs)
                            : _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), xs, gacc[m]);
      }
    }
    if (prefetch) {
      const char* next = reinterpret_cast<const char*>(st + 2 * g * r) + kPrefetchBytes;
      _mm_prefetch(next, _MM_HINT_T0);
      _mm_prefetch(next + 64, _MM_HINT_T0);
    }
    const __m512 scale = _mm512_maskz_loadu_ps(rows, st + (2 * g) * r);
    #pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) acc[m] = _mm512_fmadd_ps(scale, gacc[m], acc[m]);
  }
  // the zero points' term, summed from zero in group order and added once (qgemv.h)
  __m512 zacc[MB];
  #pragma GCC unroll 16
  for (int m = 0; m < MB; ++m) zacc[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const __m512 zero = _mm512_maskz_loadu_ps(rows, st + (2 * g + 1) * r);
    #pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) {
      zacc[m] = _mm512_fmadd_ps(zero, _mm512_set1_ps(xsum[(m0 + m) * groups + g]), zacc[m]);
    }
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MB; ++m) {
    _mm512_mask_storeu_ps(y + (m0 + m) * ldy, rows, _mm512_add_ps(acc[m], zacc[m]));
  }
}

// int8, tiled layout (int8_layout.h): as int4_tile, the 16 lanes are a tile's rows; a
// 64-byte load holds four columns of each row as unsigned bytes u = q + 128, multiplied with
// four broadcast activation bytes. Eight loads cover a 32-value block, whose exact sum
// u . xq - 128 * sum(xq) is converted once per block and activation row.
// kOneBlock: G == 32, as in int4_tile.
template <int MB, bool kOneBlock>
FASTDECODE_VNNI void int8_tile(const QuantizedActivations& a, int64_t m0, const int32_t* bsum,
                               const int32_t* wt, const float* st, int64_t r, int64_t G,
                               float* y, int64_t ldy, bool prefetch) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = kOneBlock ? 1 : G / kActBlock;
  const int64_t blocks = K / kActBlock;
  const __mmask16 rows = static_cast<__mmask16>((1u << r) - 1u);
  __m512 acc[MB];
  #pragma GCC unroll 16
  for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 gacc[MB];
    #pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) gacc[m] = _mm512_setzero_ps();
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      // two chains per activation row below 4 rows (to cover vpdpbusd's latency), one from 4
      constexpr int C = MB >= 4 ? 1 : 2;
      __m512i dot[MB][C];
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        #pragma GCC unroll 16
        for (int c = 0; c < C; ++c) dot[m][c] = _mm512_setzero_si512();
      }
      if (prefetch) {  // the tiles of a task are one contiguous stream
        const char* next = reinterpret_cast<const char*>(wt + b * 8 * r) + kPrefetchBytes;
        for (int j = 0; j < 8; ++j) _mm_prefetch(next + 64 * j, _MM_HINT_T0);
      }
      for (int j = 0; j < 8; ++j) {
        const __m512i w = _mm512_maskz_loadu_epi32(rows, wt + (b * 8 + j) * r);
        #pragma GCC unroll 16
        for (int m = 0; m < MB; ++m) {
          const int64_t k = (m0 + m) * K + b * kActBlock + 4 * j;
          dot[m][j % C] = _mm512_dpbusd_epi32(dot[m][j % C], w, broadcast_quad(a.q + k));
        }
      }
      #pragma GCC unroll 16
      for (int m = 0; m < MB; ++m) {
        const int64_t xb = (m0 + m) * blocks + b;
        __m512i sum = C == 2 ? _mm512_add_epi32(dot[m][0], dot[m][C - 1]) : dot[m][0];
        sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(128 * bsum[xb]));
        const __m512 xs = _mm512_set1_ps(a.scale[xb]);
        gacc[m] = kOneBlock ? _mm512_mul_ps(_mm512_cvtepi32_ps(sum), xs)
                            : _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), xs, gacc[m]);
      }
    }
    if (prefetch) {  // scales: 4 bytes per 32 weights, so 1/8 of the weights' distance
      _mm_prefetch(reinterpret_cast<const char*>(st + g * r) + kPrefetchBytes / 8, _MM_HINT_T0);
    }
    const __m512 scale = _mm512_maskz_loadu_ps(rows, st + g * r);
    #pragma GCC unroll 16
    for (int m = 0; m < MB; ++m) acc[m] = _mm512_fmadd_ps(scale, gacc[m], acc[m]);
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MB; ++m) _mm512_mask_storeu_ps(y + (m0 + m) * ldy, rows, acc[m]);
}

// int8, row-major: kRows8 weight rows at a time (independent chains), 64 columns (two
// 32-value blocks) per load. vpdpbusd takes one unsigned operand: the activation bytes with
// their sign bit flipped are q + 128, so each lane's sum of four products is
// (q + 128) . w, and the chain starts from -128 * sum(w) (one vpdpbusd per weight load,
// shared by the activation rows) to leave q . w exactly. Lanes 0-7 hold the first block,
// 8-15 the second: one vector of two scales per block pair.
constexpr int kRows8 = 4;

// s[0] in lanes 0-7, s[1] in lanes 8-15 (two adjacent scales: one load and one permute).
FASTDECODE_VNNI inline __m512 scale_pair(const float* s) {
  const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  int64_t bits;  // memcpy: the pair need not be 8-byte aligned (_mm_load_sd reads a double)
  std::memcpy(&bits, s, sizeof(bits));
  const __m128 two = _mm_castsi128_ps(_mm_cvtsi64_si128(bits));
  return _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(two));
}

template <int MB, bool kPerChannel>
FASTDECODE_VNNI void int8_rows(const QuantizedActivations& a, int64_t m0, const int8_t* q,
                               const float* scales, int64_t n, int64_t K, int64_t G, float* y,
                               int64_t ldy, int64_t ahead) {
  const int64_t pairs = (K + 63) / 64, groups = K / G, xblocks = a.K / kActBlock;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[MB][kRows8];
  for (int m = 0; m < MB; ++m) {
    for (int r = 0; r < kRows8; ++r) acc[m][r] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t k0 = 64 * p, left = K - k0, b = 2 * p;
    const bool second = left > kActBlock;  // the pair's second block holds columns
    // the weight groups of the two blocks: one, or two adjacent ones (G >= 32)
    const int64_t g0 = kPerChannel ? 0 : k0 / G;
    const bool two_groups = !kPerChannel && second && (k0 + kActBlock) / G != g0;
    const __mmask64 cols = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
    const __mmask64 xcols =
        a.K - k0 >= 64 ? ~__mmask64{0} : (__mmask64{1} << (a.K - k0)) - 1;
    __m512i w[kRows8], start[kRows8];
    __m512 wscale[kRows8];
    for (int r = 0; r < kRows8; ++r) {
      const int8_t* qr = q + (n + r) * K + k0;
      if (ahead > 0) {  // rows n + ahead.. at this column: one line per 64
        _mm_prefetch(reinterpret_cast<const char*>(qr + ahead * K), _MM_HINT_T0);
        if (!kPerChannel && p == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(scales + (n + r + ahead) * groups),
                       _MM_HINT_T0);
        }
      }
      w[r] = _mm512_maskz_loadu_epi8(cols, qr);  // masked columns: 0
      start[r] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, w[r]));
      if (!kPerChannel) {
        const float* sr = scales + (n + r) * groups + g0;
        wscale[r] = two_groups ? scale_pair(sr) : _mm512_set1_ps(*sr);
      }
    }
    for (int m = 0; m < MB; ++m) {
      const int64_t row = m0 + m;
      const __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(xcols, a.q + row * a.K + k0),
                                         flip);
      const float* xs = a.scale + row * xblocks + b;
      // (without a second block its lanes hold 0: any scale will do)
      const __m512 xscale = second ? scale_pair(xs) : _mm512_set1_ps(*xs);
      for (int r = 0; r < kRows8; ++r) {
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start[r], x, w[r]));
        acc[m][r] = _mm512_fmadd_ps(
            dot, kPerChannel ? xscale : _mm512_mul_ps(xscale, wscale[r]), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    for (int r = 0; r < kRows8; ++r) {
      const float total = _mm512_reduce_add_ps(acc[m][r]);
      y[(m0 + m) * ldy + n + r] = kPerChannel ? total * scales[n + r] : total;
    }
  }
}

template <bool kPerChannel>
FASTDECODE_VNNI void int8_rows_all_m(const QuantizedActivations& a, const int8_t* q,
                                     const float* scales, int64_t n, int64_t K, int64_t G,
                                     float* y, int64_t ldy, int64_t ahead) {
  int64_t m0 = 0;
  for (; m0 + 4 <= a.M; m0 += 4) {
    int8_rows<4, kPerChannel>(a, m0, q, scales, n, K, G, y, ldy, m0 == 0 ? ahead : 0);
  }
  for (; m0 < a.M; ++m0) {
    int8_rows<1, kPerChannel>(a, m0, q, scales, n, K, G, y, ldy, m0 == 0 ? ahead : 0);
  }
}

}  // namespace

FASTDECODE_VNNI
void int4_gemv_vnni(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
                    const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                    int64_t t_begin, int64_t t_end, float* y, int64_t ldy) {
  const int64_t words = a.K / 8, groups = a.K / G;
  const int64_t n_begin = t_begin * kInt4TileRows;
  const int64_t task_rows = std::min(N, t_end * kInt4TileRows) - n_begin;
  prefetch_head(packed + n_begin * words * 4, task_rows * words * 4);
  prefetch_head(sz + n_begin * groups * 2, task_rows * groups * 2 * 4);
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const int32_t* wt = reinterpret_cast<const int32_t*>(packed) + n0 * words;
    const float* st = sz + n0 * groups * 2;
    for_row_blocks<8>(a.M, G == kActBlock, [&](int64_t m0, auto mb, auto one_block) {
      int4_tile<mb.value, one_block.value>(a, m0, bsum, xsum, wt, st, r, G, y + n0, ldy,
                                           m0 == 0);
    });
  }
}

FASTDECODE_VNNI
void int8_tiled_gemv_vnni(const QuantizedActivations& a, const int32_t* bsum,
                          const uint8_t* packed, const float* scales, int64_t N, int64_t G,
                          int64_t t_begin, int64_t t_end, float* y, int64_t ldy) {
  const int64_t K = a.K, groups = K / G;
  const int64_t n_begin = t_begin * kInt4TileRows;
  const int64_t task_rows = std::min(N, t_end * kInt4TileRows) - n_begin;
  prefetch_head(packed + n_begin * K, task_rows * K);
  prefetch_head(scales + n_begin * groups, task_rows * groups * 4);
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const int32_t* wt = reinterpret_cast<const int32_t*>(packed + n0 * K);
    const float* st = scales + n0 * groups;
    for_row_blocks<8>(a.M, G == kActBlock, [&](int64_t m0, auto mb, auto one_block) {
      int8_tile<mb.value, one_block.value>(a, m0, bsum, wt, st, r, G, y + n0, ldy, m0 == 0);
    });
  }
}

FASTDECODE_VNNI
void int8_gemv_vnni(const QuantizedActivations& a, const int8_t* q, const float* scales,
                    int64_t K, int64_t G, int64_t n_begin, int64_t n_end, float* y,
                    int64_t ldy) {
  // prefetch about kPrefetchBytes ahead: whole blocks of kRows8 rows
  const int64_t ahead = std::max<int64_t>(
      kRows8, (kPrefetchBytes / K + kRows8 - 1) / kRows8 * kRows8);
  prefetch_head(q + n_begin * K, std::min(ahead, n_end - n_begin) * K);
  int64_t n = n_begin;
  for (; n + kRows8 <= n_end; n += kRows8) {
    const int64_t rows_ahead = n + ahead + kRows8 <= n_end ? ahead : 0;
    if (G == K) {
      int8_rows_all_m<true>(a, q, scales, n, K, G, y, ldy, rows_ahead);
    } else {
      int8_rows_all_m<false>(a, q, scales, n, K, G, y, ldy, rows_ahead);
    }
  }
  if (n < n_end) int8_gemv_portable(a, q, scales, K, G, n, n_end, y, ldy);
}

}  // namespace fastdecode::kernels

#endif  // FASTDECODE_X86_CLONES
