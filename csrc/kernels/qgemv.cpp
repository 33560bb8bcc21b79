#include "kernels/qgemv.h"

#include <cstring>

#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

// Written with 16-lane vector types (vec.h) rather than left to the auto-vectoriser, which
// kept these int8 -> fp32 loops to 128/256-bit vectors. The loads and conversions are
// spelled out in the clone bodies: a helper compiled for the default target is lowered lane
// by lane before it is inlined into the AVX-512 clone.

// Up to 4 activation rows share each dequantised weight chunk (a verify pass or a
// two-token draft step costs little more than one row). The body is a macro instantiated
// for blocks of 4 and single rows: a helper compiled for the default target would have its
// vector conversions lowered lane by lane before being inlined into the AVX-512 clone.
#define FASTDECODE_INT8_ROWS(MB)                                                            \
  for (; m0 + (MB) <= M; m0 += (MB)) {                                                      \
    vf16 acc[MB];                                                                           \
    float tail[MB];                                                                         \
    _Pragma("GCC unroll 4")                                                                 \
    for (int r = 0; r < (MB); ++r) {                                                        \
      acc[r] = vf16{};                                                                      \
      tail[r] = 0.0f;                                                                       \
    }                                                                                       \
    for (int64_t g = 0; g < groups; ++g) {                                                  \
      const int64_t k0 = g * G;                                                             \
      vf16 part[MB];                                                                        \
      _Pragma("GCC unroll 4")                                                               \
      for (int r = 0; r < (MB); ++r) part[r] = vf16{};                                      \
      for (int64_t k = k0; k < k0 + g_full; k += kLanes) {                                  \
        vu8x16 qv;                                                                          \
        std::memcpy(&qv, qn + k, sizeof(qv));                                               \
        /* int8 read as uint8 and re-centred (q ^ 0x80 = q + 128): GCC 12 widens unsigned   \
           bytes with one instruction but signed ones lane by lane. */                      \
        const vf16 wv = __builtin_convertvector(                                            \
            __builtin_convertvector(qv ^ sign_bit, vi16) - bias, vf16);                     \
        _Pragma("GCC unroll 4")                                                             \
        for (int r = 0; r < (MB); ++r) {                                                    \
          vf16 xv;                                                                          \
          std::memcpy(&xv, x + (m0 + r) * K + k, sizeof(xv));                               \
          part[r] += xv * wv;                                                               \
        }                                                                                   \
      }                                                                                     \
      _Pragma("GCC unroll 4")                                                               \
      for (int r = 0; r < (MB); ++r) {                                                      \
        const float* xm = x + (m0 + r) * K;                                                 \
        float part_tail = 0.0f;                                                             \
        for (int64_t k = k0 + g_full; k < k0 + G; ++k) part_tail += xm[k] * qn[k];          \
        acc[r] += sn[g] * part[r];                                                          \
        tail[r] += sn[g] * part_tail;                                                       \
      }                                                                                     \
    }                                                                                       \
    _Pragma("GCC unroll 4")                                                                 \
    for (int r = 0; r < (MB); ++r) y[(m0 + r) * ldy + n] = sum16(acc[r]) + tail[r];         \
  }

FASTDECODE_MULTIVERSION
void int8_gemv(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scales,
               int64_t G, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  const int64_t groups = K / G;
  const int64_t g_full = G - G % kLanes;  // per-channel (G == K) may leave a tail
  const vu8x16 sign_bit = vu8x16{} + static_cast<uint8_t>(0x80);
  const vi16 bias = vi16{} + 128;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* qn = q + n * K;
    const float* sn = scales + n * groups;
    int64_t m0 = 0;
    FASTDECODE_INT8_ROWS(4)
    FASTDECODE_INT8_ROWS(2)
    FASTDECODE_INT8_ROWS(1)
  }
}

#undef FASTDECODE_INT8_ROWS

// kRows output rows at a time: each x chunk is loaded once for all of them, and the rows'
// accumulators are independent dependency chains (a single chain is FMA-latency bound).
// The body is a macro, instantiated for full blocks and for single tail rows: a helper
// function compiled for the default target would have its vector conversions lowered lane
// by lane before being inlined into the AVX-512 clone.
constexpr int kRows = 4;

#define FASTDECODE_INT4_ROWS(ROWS)                                                          \
  for (int64_t m = 0; m < M; ++m) {                                                         \
    const float* xm = x + m * K;                                                            \
    const float* xs = xsum + m * groups;                                                    \
    vf16 acc[ROWS];                                                                         \
    float offset[ROWS];                                                                     \
    _Pragma("GCC unroll 4")                                                                 \
    for (int r = 0; r < ROWS; ++r) {                                                        \
      acc[r] = vf16{};                                                                      \
      offset[r] = 0.0f;                                                                     \
    }                                                                                       \
    for (int64_t g = 0; g < groups; ++g) {                                                  \
      vf16 part[ROWS];                                                                      \
      _Pragma("GCC unroll 4")                                                               \
      for (int r = 0; r < ROWS; ++r) part[r] = vf16{};                                      \
      for (int64_t k = g * G; k < (g + 1) * G; k += 32) {                                   \
        vf16 x_lo, x_hi;                                                                    \
        std::memcpy(&x_lo, xm + k, sizeof(x_lo));                                           \
        std::memcpy(&x_hi, xm + k + 16, sizeof(x_hi));                                      \
        _Pragma("GCC unroll 4")                                                             \
        for (int r = 0; r < ROWS; ++r) {                                                    \
          vu8x16 b; /* 16 bytes = 32 values of row n0 + r */                                \
          std::memcpy(&b, packed + (n0 + r) * row_bytes + k / 2, sizeof(b));                \
          const vi16 lo = __builtin_convertvector(b & low_mask, vi16);                      \
          const vi16 hi = __builtin_convertvector(b >> 4, vi16);                            \
          /* two statements: two FMAs, not a multiply, an FMA and an add */                 \
          part[r] += x_lo * __builtin_convertvector(lo, vf16);                              \
          part[r] += x_hi * __builtin_convertvector(hi, vf16);                              \
        }                                                                                   \
      }                                                                                     \
      _Pragma("GCC unroll 4")                                                               \
      for (int r = 0; r < ROWS; ++r) {                                                      \
        const float* szr = sz + ((n0 + r) * groups + g) * 2;                                \
        acc[r] += szr[0] * part[r];                                                         \
        offset[r] += (szr[1] - 8.0f * szr[0]) * xs[g];                                      \
      }                                                                                     \
    }                                                                                       \
    _Pragma("GCC unroll 4")                                                                 \
    for (int r = 0; r < ROWS; ++r) {                                                        \
      float total = offset[r];                                                              \
      for (int l = 0; l < kLanes; ++l) total += acc[r][l];                                  \
      y[m * ldy + n0 + r] = total;                                                          \
    }                                                                                       \
  }

FASTDECODE_MULTIVERSION
void int4_gemv(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* sz,
               int64_t G, const float* xsum, int64_t n_begin, int64_t n_end, float* y,
               int64_t ldy) {
  const int64_t groups = K / G;
  const int64_t row_bytes = K / 2;
  const vu8x16 low_mask = vu8x16{} + static_cast<uint8_t>(0x0f);
  int64_t n0 = n_begin;
  for (; n0 + kRows <= n_end; n0 += kRows) {
    FASTDECODE_INT4_ROWS(kRows)
  }
  for (; n0 < n_end; ++n0) {
    FASTDECODE_INT4_ROWS(1)
  }
}

#undef FASTDECODE_INT4_ROWS

void group_sums(const float* x, int64_t M, int64_t K, int64_t G, float* xsum) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t g = 0; g < K / G; ++g) {
      double s = 0.0;
      for (int64_t k = g * G; k < (g + 1) * G; ++k) s += x[m * K + k];
      xsum[m * (K / G) + g] = static_cast<float>(s);
    }
  }
}

}  // namespace fastdecode::kernels
