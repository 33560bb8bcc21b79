#include "kernels/qgemv.h"

#include <cstring>

#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

// Written with 16-lane vector types (vec.h) rather than left to the auto-vectoriser, which
// kept these int8 -> fp32 loops to 128/256-bit vectors. The loads and conversions are
// spelled out in the clone bodies: a helper compiled for the default target is lowered lane
// by lane before it is inlined into the AVX-512 clone.

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
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      vf16 acc = splat16(0.0f);
      float tail = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k0 = g * G;
        vf16 part = splat16(0.0f);
        for (int64_t k = k0; k < k0 + g_full; k += kLanes) {
          vf16 xv;
          vu8x16 qv;
          std::memcpy(&xv, xm + k, sizeof(xv));
          std::memcpy(&qv, qn + k, sizeof(qv));
          // int8 read as uint8 and re-centred (q ^ 0x80 = q + 128): GCC 12 widens unsigned
          // bytes with one instruction but signed ones lane by lane.
          const vi16 wide = __builtin_convertvector(qv ^ sign_bit, vi16) - bias;
          part += xv * __builtin_convertvector(wide, vf16);
        }
        float part_tail = 0.0f;
        for (int64_t k = k0 + g_full; k < k0 + G; ++k) part_tail += xm[k] * qn[k];
        acc += sn[g] * part;
        tail += sn[g] * part_tail;
      }
      y[m * ldy + n] = sum16(acc) + tail;
    }
  }
}

FASTDECODE_MULTIVERSION
void int4_gemv(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* sz,
               int64_t G, const float* xsum, int64_t n_begin, int64_t n_end, float* y,
               int64_t ldy) {
  const int64_t groups = K / G;
  const vu8x16 low_mask = vu8x16{} + static_cast<uint8_t>(0x0f);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* pn = packed + n * (K / 2);
    const float* szn = sz + n * groups * 2;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      const float* xs = xsum + m * groups;
      vf16 acc = splat16(0.0f);
      float offset = 0.0f;  // sum_g (zero_g - 8 scale_g) * sum(x_g)
      for (int64_t g = 0; g < groups; ++g) {
        vf16 part = splat16(0.0f);
        for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
          vu8x16 b;  // 16 bytes = 32 values
          vf16 x_lo, x_hi;
          std::memcpy(&b, pn + k / 2, sizeof(b));
          std::memcpy(&x_lo, xm + k, sizeof(x_lo));
          std::memcpy(&x_hi, xm + k + 16, sizeof(x_hi));
          const vi16 lo = __builtin_convertvector(b & low_mask, vi16);
          const vi16 hi = __builtin_convertvector(b >> 4, vi16);
          part += x_lo * __builtin_convertvector(lo, vf16) + x_hi * __builtin_convertvector(hi, vf16);
        }
        const float scale = szn[2 * g];
        acc += scale * part;
        offset += (szn[2 * g + 1] - 8.0f * scale) * xs[g];
      }
      y[m * ldy + n] = sum16(acc) + offset;
    }
  }
}

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
