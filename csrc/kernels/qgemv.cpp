// Activation quantization, the portable quantized GEMVs and the run-time kernel choice.
#include "kernels/qgemv.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/int4_layout.h"

namespace fastdecode::kernels {

// per call: vectorised rounding instead of a libm call a value
FASTDECODE_KERNEL_BODY
bool quantize_activations_body(const float* x, int64_t M, int64_t K, int64_t K_pad, int8_t* q,
                               float* scale) {
  const int64_t blocks = K_pad / kActBlock;
  bool finite = true;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * kActBlock, k1 = std::max(k0, std::min(K, k0 + kActBlock));
      int8_t* qb = q + m * K_pad + k0;
      // max |x| as the bits of |x|: for non-negative floats the integer order is the float
      // order, NaN and inf sit above every finite value, and an integer max vectorises
      uint32_t max_bits = 0;
      for (int64_t k = k0; k < k1; ++k) {
        uint32_t bits;
        std::memcpy(&bits, x + m * K + k, sizeof(bits));
        max_bits = std::max(max_bits, bits & 0x7fffffffu);
      }
      const bool block_finite = max_bits < 0x7f800000u;
      float amax;
      std::memcpy(&amax, &max_bits, sizeof(amax));
      if (!block_finite) {  // x * inv would be NaN, whose integer conversion is undefined
        finite = false;
        scale[m * blocks + b] = 0.0f;
        for (int64_t k = 0; k < kActBlock; ++k) qb[k] = 0;
        continue;
      }
      scale[m * blocks + b] = amax / kActMax;
      const float inv = amax > 0.0f ? kActMax / amax : 0.0f;
      for (int64_t k = k0; k < k1; ++k) {
        // |x * inv| <= 127 up to one rounding, which nearbyint brings back to 127
        qb[k - k0] = static_cast<int8_t>(std::nearbyint(x[m * K + k] * inv));
      }
      for (int64_t k = k1; k < k0 + kActBlock; ++k) qb[k - k0] = 0;
    }
  }
  return finite;
}
FASTDECODE_DISPATCH(bool, quantize_activations,
                    (const float* x, int64_t M, int64_t K, int64_t K_pad, int8_t* q, float* scale),
                    (x, M, K, K_pad, q, scale))

FASTDECODE_KERNEL_BODY
void group_sums_body(const float* x, int64_t M, int64_t K, int64_t G, float* sums) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t g = 0; g < K / G; ++g) {
      // four partial sums: one chain of dependent double adds took ~4 cycles a value
      double part[4] = {0.0, 0.0, 0.0, 0.0};
      for (int64_t k = g * G; k < (g + 1) * G; k += 4) {
        for (int i = 0; i < 4; ++i) part[i] += x[m * K + k + i];
      }
      sums[m * (K / G) + g] = static_cast<float>((part[0] + part[1]) + (part[2] + part[3]));
    }
  }
}
FASTDECODE_DISPATCH(void, group_sums,
                    (const float* x, int64_t M, int64_t K, int64_t G, float* sums),
                    (x, M, K, G, sums))

FASTDECODE_KERNEL_BODY
void int8_gemv_portable_body(const QuantizedActivations& a, const int8_t* q, const float* scales,
                             int64_t K, int64_t G, int64_t n_begin, int64_t n_end, float* y,
                             int64_t ldy) {
  const bool per_channel = G == K;
  const int64_t groups = K / G, blocks = (K + kActBlock - 1) / kActBlock;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* qn = q + n * K;
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* xq = a.q + m * a.K;
      const float* xs = a.scale + m * (a.K / kActBlock);
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t k0 = b * kActBlock, k1 = std::min(K, k0 + kActBlock);
        int32_t dot = 0;
        for (int64_t k = k0; k < k1; ++k) dot += int32_t{qn[k]} * int32_t{xq[k]};
        const float sw = per_channel ? 1.0f : scales[n * groups + k0 / G];
        acc += xs[b] * sw * static_cast<float>(dot);
      }
      y[m * ldy + n] = per_channel ? scales[n] * acc : acc;
    }
  }
}
FASTDECODE_DISPATCH(void, int8_gemv_portable,
                    (const QuantizedActivations& a, const int8_t* q, const float* scales, int64_t K,
                     int64_t G, int64_t n_begin, int64_t n_end, float* y, int64_t ldy),
                    (a, q, scales, K, G, n_begin, n_end, y, ldy))

// Lane-parallel over the (up to) 16 rows of a tile: the loops over i vectorise.
FASTDECODE_KERNEL_BODY
void int4_gemv_portable_body(const QuantizedActivations& a, const int32_t* bsum,
                             const float* xsum, const uint8_t* packed, const float* sz, int64_t N,
                             int64_t G, int64_t t_begin, int64_t t_end, float* y, int64_t ldy) {
  const int64_t K = a.K, words = K / 8, groups = K / G, blocks = K / kActBlock;
  const int64_t blocks_per_group = G / kActBlock;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const uint8_t* pt = packed + n0 * words * 4;
    const float* st = sz + n0 * groups * 2;
    for (int64_t m = 0; m < a.M; ++m) {
      float acc[kInt4TileRows] = {}, zacc[kInt4TileRows] = {};  // scale and zero terms
      for (int64_t g = 0; g < groups; ++g) {
        float gacc[kInt4TileRows] = {};
        for (int64_t bg = 0; bg < blocks_per_group; ++bg) {
          const int64_t b = g * blocks_per_group + bg;
          const int8_t* xb = a.q + m * K + b * kActBlock;
          int32_t dot[kInt4TileRows] = {};
          for (int64_t j = 0; j < 4; ++j) {
            for (int64_t i = 0; i < r; ++i) {
              uint32_t w;
              std::memcpy(&w, pt + ((b * 4 + j) * r + i) * 4, 4);
              for (int t4 = 0; t4 < 4; ++t4) {
                const int32_t lo = (w >> (8 * t4)) & 0x0f, hi = (w >> (8 * t4 + 4)) & 0x0f;
                dot[i] += lo * xb[4 * j + t4] + hi * xb[16 + 4 * j + t4];
              }
            }
          }
          const float xs = a.scale[m * blocks + b];
          const int32_t centre = 8 * bsum[m * blocks + b];
          for (int64_t i = 0; i < r; ++i) gacc[i] += static_cast<float>(dot[i] - centre) * xs;
        }
        const float gsum = xsum[m * groups + g];
        for (int64_t i = 0; i < r; ++i) {
          acc[i] += st[(2 * g) * r + i] * gacc[i];
          zacc[i] += st[(2 * g + 1) * r + i] * gsum;
        }
      }
      for (int64_t i = 0; i < r; ++i) y[m * ldy + n0 + i] = acc[i] + zacc[i];
    }
  }
}
FASTDECODE_DISPATCH(void, int4_gemv_portable,
                    (const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
                     const uint8_t* packed, const float* sz, int64_t N, int64_t G,
                     int64_t t_begin, int64_t t_end, float* y, int64_t ldy),
                    (a, bsum, xsum, packed, sz, N, G, t_begin, t_end, y, ldy))

FASTDECODE_KERNEL_BODY
void activation_block_sums_body(const QuantizedActivations& a, int32_t* sums) {
  const int64_t blocks = a.K / kActBlock;
  for (int64_t m = 0; m < a.M; ++m) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int8_t* xb = a.q + m * a.K + b * kActBlock;
      int32_t s = 0;
      for (int64_t k = 0; k < kActBlock; ++k) s += xb[k];
      sums[m * blocks + b] = s;
    }
  }
}

FASTDECODE_DISPATCH(void, activation_block_sums, (const QuantizedActivations& a, int32_t* sums),
                    (a, sums))

FASTDECODE_KERNEL_BODY
void split_activations_body(const QuantizedActivations& a, int8_t* planes) {
  for (int64_t m = 0; m < a.M; ++m) {
    int8_t* lo_row = planes + 2 * m * a.K;
    int8_t* hi_row = lo_row + a.K;
    for (int64_t k = 0; k < a.K; ++k) {
      const int x = a.q[m * a.K + k], lo = ((x + 8) & 15) - 8;
      lo_row[k] = static_cast<int8_t>(lo);
      hi_row[k] = static_cast<int8_t>((x - lo) >> 4);  // exact: x - lo is a multiple of 16
    }
  }
}
FASTDECODE_DISPATCH(void, split_activations, (const QuantizedActivations& a, int8_t* planes),
                    (a, planes))

// Lane-parallel over the rows of a tile, in the order of the vector kernels' lanes.
FASTDECODE_KERNEL_BODY
void int8_tiled_gemv_portable_body(const QuantizedActivations& a, const int32_t* bsum,
                                   const uint8_t* packed, const float* scales, int64_t N,
                                   int64_t G, int64_t t_begin, int64_t t_end, float* y,
                                   int64_t ldy) {
  const int64_t K = a.K, groups = K / G, blocks_per_group = G / kActBlock;
  const int64_t blocks = K / kActBlock;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t r = tile_rows(N, t), n0 = t * kInt4TileRows;
    const uint8_t* pt = packed + n0 * K;
    const float* st = scales + n0 * groups;
    for (int64_t m = 0; m < a.M; ++m) {
      float acc[kInt4TileRows] = {};
      for (int64_t g = 0; g < groups; ++g) {
        float gacc[kInt4TileRows] = {};
        for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
          const int8_t* xb = a.q + m * K + b * kActBlock;
          int32_t dot[kInt4TileRows] = {};
          for (int64_t j = 0; j < kActBlock / 4; ++j) {
            for (int64_t i = 0; i < r; ++i) {
              const uint8_t* w = pt + ((b * 8 + j) * r + i) * 4;
              for (int c = 0; c < 4; ++c) dot[i] += int32_t{w[c]} * int32_t{xb[4 * j + c]};
            }
          }
          const int32_t offset = 128 * bsum[m * blocks + b];
          const float xs = a.scale[m * blocks + b];
          for (int64_t i = 0; i < r; ++i) gacc[i] += static_cast<float>(dot[i] - offset) * xs;
        }
        for (int64_t i = 0; i < r; ++i) acc[i] += st[g * r + i] * gacc[i];
      }
      for (int64_t i = 0; i < r; ++i) y[m * ldy + n0 + i] = acc[i];
    }
  }
}

FASTDECODE_DISPATCH(void, int8_tiled_gemv_portable,
                    (const QuantizedActivations& a, const int32_t* bsum, const uint8_t* packed,
                     const float* scales, int64_t N, int64_t G, int64_t t_begin, int64_t t_end,
                     float* y, int64_t ldy),
                    (a, bsum, packed, scales, N, G, t_begin, t_end, y, ldy))

bool qgemv_vnni_available() {
  return selected_isa() == Isa::avx512 && cpu_has_avx512_vnni();
}

bool qgemv_avx2_available() {
#if FASTDECODE_X86_CLONES
  return selected_isa() == Isa::avx2 || selected_isa() == Isa::avx512;
#else
  return false;
#endif
}

void int8_gemv(const QuantizedActivations& a, const int8_t* q, const float* scales, int64_t K,
               int64_t G, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
#if FASTDECODE_X86_CLONES
  if (qgemv_vnni_available()) return int8_gemv_vnni(a, q, scales, K, G, n_begin, n_end, y, ldy);
  if (qgemv_avx2_available()) return int8_gemv_avx2(a, q, scales, K, G, n_begin, n_end, y, ldy);
#endif
  int8_gemv_portable(a, q, scales, K, G, n_begin, n_end, y, ldy);
}

void int4_gemv(const QuantizedActivations& a, const int32_t* bsum, const float* xsum,
               const uint8_t* packed, const float* sz, int64_t N, int64_t G, int64_t t_begin,
               int64_t t_end, float* y, int64_t ldy) {
#if FASTDECODE_X86_CLONES
  if (qgemv_vnni_available()) {
    return int4_gemv_vnni(a, bsum, xsum, packed, sz, N, G, t_begin, t_end, y, ldy);
  }
  if (qgemv_avx2_available()) {
    return int4_gemv_avx2(a, bsum, xsum, packed, sz, N, G, t_begin, t_end, y, ldy);
  }
#endif
  int4_gemv_portable(a, bsum, xsum, packed, sz, N, G, t_begin, t_end, y, ldy);
}

void int8_tiled_gemv(const QuantizedActivations& a, const int32_t* bsum, const uint8_t* packed,
                     const float* scales, int64_t N, int64_t G, int64_t t_begin, int64_t t_end,
                     float* y, int64_t ldy) {
#if FASTDECODE_X86_CLONES
  if (qgemv_vnni_available()) {
    return int8_tiled_gemv_vnni(a, bsum, packed, scales, N, G, t_begin, t_end, y, ldy);
  }
  if (qgemv_avx2_available()) {
    return int8_tiled_gemv_avx2(a, bsum, packed, scales, N, G, t_begin, t_end, y, ldy);
  }
#endif
  int8_tiled_gemv_portable(a, bsum, packed, scales, N, G, t_begin, t_end, y, ldy);
}

bool int8_tiled_gemv_takes_split(int64_t rows) {
#if FASTDECODE_X86_CLONES
  return rows >= 2 && !qgemv_vnni_available() && qgemv_avx2_available();
#else
  (void)rows;
  return false;
#endif
}

}  // namespace fastdecode::kernels
