// Compiled with -ffp-contract=off (CMakeLists.txt): every product and sum is rounded on its
// own, exactly as the separate torch ops of the reference round them, so quantized values
// match the reference bit for bit.
#include "kernels/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

namespace fastdecode::kernels {

float quantize_int8_row(const float* w, int64_t K, int8_t* q) {
  float lo = 0.0f, hi = 0.0f;  // min(., 0) and max(., 0) as in the reference
  for (int64_t k = 0; k < K; ++k) {
    lo = std::min(lo, w[k]);
    hi = std::max(hi, w[k]);
  }
  float scale = std::max(-lo, hi) / 127.5f;
  scale = std::max(scale, FLT_EPSILON);
  for (int64_t k = 0; k < K; ++k) {
    const float r = std::nearbyint(w[k] / scale);  // ties to even, like torch.round
    q[k] = static_cast<int8_t>(std::min(127.0f, std::max(-128.0f, r)));
  }
  return scale;
}

void quantize_int4_row(const float* w, int64_t K, int64_t G, uint8_t* packed, float* sz) {
  std::fill(packed, packed + K / 2, 0);
  for (int64_t g = 0; g < K / G; ++g) {
    const float* wg = w + g * G;
    float lo = wg[0], hi = wg[0];
    for (int64_t i = 1; i < G; ++i) {
      lo = std::min(lo, wg[i]);
      hi = std::max(hi, wg[i]);
    }
    const float scale = std::max(hi - lo, 1e-6f) / 15.0f;
    const float zero = lo + scale * 8.0f;
    const float min_val = zero - scale * 8.0f;
    sz[2 * g] = scale;
    sz[2 * g + 1] = zero;
    for (int64_t i = 0; i < G; ++i) {
      const int64_t k = g * G + i;
      const float r = std::nearbyint((wg[i] - min_val) / scale);
      const int v = static_cast<int>(std::min(15.0f, std::max(0.0f, r)));
      uint8_t& byte = packed[(k / 32) * 16 + (k % 16)];
      byte |= (k % 32) < 16 ? static_cast<uint8_t>(v) : static_cast<uint8_t>(v << 4);
    }
  }
}

void dequantize_int8_rows(const int8_t* q, const float* scales, int64_t K, int64_t G, int64_t n0,
                          int64_t n1, float* dst) {
  const int64_t groups = K / G;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* qn = q + n * K;
    float* out = dst + (n - n0) * K;
    for (int64_t g = 0; g < groups; ++g) {
      const float scale = scales[n * groups + g];
      for (int64_t k = g * G; k < (g + 1) * G; ++k) out[k] = static_cast<float>(qn[k]) * scale;
    }
  }
}

}  // namespace fastdecode::kernels
