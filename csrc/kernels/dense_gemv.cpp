#include "kernels/dense_gemv.h"

#include "kernels/simd.h"

namespace fastdecode::kernels {

namespace {

// Dot products of one activation row with kRows weight rows at once: the activation chunk
// is loaded once per kRows rows, and kRows * kLanes independent accumulators hide FMA latency.
constexpr int kRows = 4;

// Ask for the next block's rows (same columns) while this block is summed, so that their
// cache lines are in flight before the next iteration needs them. `next` = w0 + kRows rows.
__attribute__((always_inline)) inline void prefetch_next_block(const float* next, int64_t ldw) {
  for (int r = 0; r < kRows; ++r) __builtin_prefetch(next + r * ldw);
}

template <int kWidth = kLanes>
inline float reduce_lanes(const float* acc) {
  float s = 0.0f;
  for (int l = 0; l < kWidth; ++l) s += acc[l];
  return s;
}

}  // namespace

FASTDECODE_KERNEL_BODY
void gemv_f32_body(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
                   int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  const int64_t k_full = K - K % kLanes;
  int64_t n = n_begin;
  for (; n + kRows <= n_end; n += kRows) {
    const float* w0 = w + (n + 0) * ldw;
    const float* w1 = w + (n + 1) * ldw;
    const float* w2 = w + (n + 2) * ldw;
    const float* w3 = w + (n + 3) * ldw;
    int64_t m = 0;
    // Two activation rows at a time (verify passes, small batches): eight independent
    // accumulator chains hide the FMA latency, and each weight load feeds two FMAs. The
    // chains are 8 lanes wide (one ymm): at 16 lanes the eight of them alone fill the AVX2
    // register file and spill (5 rows took 4x one row's time; 8 lanes: ~1.5x).
    constexpr int kPairLanes = 8;
    const int64_t k_pairs = K - K % kPairLanes;
    for (; m + 2 <= M; m += 2) {
      const float* xm = x + m * ldx;
      const float* xn = xm + ldx;
      float a0[kPairLanes] = {}, a1[kPairLanes] = {}, a2[kPairLanes] = {}, a3[kPairLanes] = {};
      float b0[kPairLanes] = {}, b1[kPairLanes] = {}, b2[kPairLanes] = {}, b3[kPairLanes] = {};
      const bool prefetch = m == 0 && n + 2 * kRows <= n_end;
      for (int64_t k = 0; k < k_pairs; k += kPairLanes) {
        if (prefetch && k % kLanes == 0) prefetch_next_block(w0 + kRows * ldw + k, ldw);
        for (int l = 0; l < kPairLanes; ++l) {
          const float xv = xm[k + l], xw = xn[k + l];
          a0[l] += xv * w0[k + l];
          a1[l] += xv * w1[k + l];
          a2[l] += xv * w2[k + l];
          a3[l] += xv * w3[k + l];
          b0[l] += xw * w0[k + l];
          b1[l] += xw * w1[k + l];
          b2[l] += xw * w2[k + l];
          b3[l] += xw * w3[k + l];
        }
      }
      for (int64_t k = k_pairs; k < K; ++k) {
        a0[0] += xm[k] * w0[k];
        a1[0] += xm[k] * w1[k];
        a2[0] += xm[k] * w2[k];
        a3[0] += xm[k] * w3[k];
        b0[0] += xn[k] * w0[k];
        b1[0] += xn[k] * w1[k];
        b2[0] += xn[k] * w2[k];
        b3[0] += xn[k] * w3[k];
      }
      float* ym = y + m * ldy + n;
      float* yn = ym + ldy;
      ym[0] = reduce_lanes<kPairLanes>(a0);
      ym[1] = reduce_lanes<kPairLanes>(a1);
      ym[2] = reduce_lanes<kPairLanes>(a2);
      ym[3] = reduce_lanes<kPairLanes>(a3);
      yn[0] = reduce_lanes<kPairLanes>(b0);
      yn[1] = reduce_lanes<kPairLanes>(b1);
      yn[2] = reduce_lanes<kPairLanes>(b2);
      yn[3] = reduce_lanes<kPairLanes>(b3);
    }
    for (; m < M; ++m) {
      const float* xm = x + m * ldx;
      float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
      const bool prefetch = m == 0 && n + 2 * kRows <= n_end;
      for (int64_t k = 0; k < k_full; k += kLanes) {
        if (prefetch) prefetch_next_block(w0 + kRows * ldw + k, ldw);
        for (int l = 0; l < kLanes; ++l) {
          const float xv = xm[k + l];
          a0[l] += xv * w0[k + l];
          a1[l] += xv * w1[k + l];
          a2[l] += xv * w2[k + l];
          a3[l] += xv * w3[k + l];
        }
      }
      for (int64_t k = k_full; k < K; ++k) {
        const float xv = xm[k];
        a0[0] += xv * w0[k];
        a1[0] += xv * w1[k];
        a2[0] += xv * w2[k];
        a3[0] += xv * w3[k];
      }
      float* ym = y + m * ldy + n;
      ym[0] = reduce_lanes(a0);
      ym[1] = reduce_lanes(a1);
      ym[2] = reduce_lanes(a2);
      ym[3] = reduce_lanes(a3);
    }
  }
  for (; n < n_end; ++n) {
    const float* wn = w + n * ldw;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * ldx;
      float a[kLanes] = {};
      for (int64_t k = 0; k < k_full; k += kLanes) {
        for (int l = 0; l < kLanes; ++l) a[l] += xm[k + l] * wn[k + l];
      }
      for (int64_t k = k_full; k < K; ++k) a[0] += xm[k] * wn[k];
      y[m * ldy + n] = reduce_lanes(a);
    }
  }
}
FASTDECODE_DISPATCH_ZMM(void, gemv_f32,
                    (const float* x, int64_t ldx, int64_t M, int64_t K, const float* w, int64_t ldw,
                     int64_t n_begin, int64_t n_end, float* y, int64_t ldy),
                    (x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy))

}  // namespace fastdecode::kernels
