#include "kernels/rms_norm.h"

#include <cmath>

#include "kernels/simd.h"

namespace fastdecode::kernels {

FASTDECODE_KERNEL_BODY
void rms_norm_f32_body(const float* x, int64_t rows, int64_t E, const float* weight, float eps,
                       float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * E;
    float* yr = y + r * E;
    // kLanes partial sums: vectorisable, and a shorter rounding chain than one running sum
    float part[kLanes] = {};
    const int64_t e_full = E - E % kLanes;
    for (int64_t e = 0; e < e_full; e += kLanes) {
      for (int l = 0; l < kLanes; ++l) part[l] += xr[e + l] * xr[e + l];
    }
    float sumsq = 0.0f;
    for (int l = 0; l < kLanes; ++l) sumsq += part[l];
    for (int64_t e = e_full; e < E; ++e) sumsq += xr[e] * xr[e];
    const float inv_rms = 1.0f / std::sqrt(sumsq / static_cast<float>(E) + eps);
    for (int64_t e = 0; e < E; ++e) yr[e] = xr[e] * inv_rms * weight[e];
  }
}
FASTDECODE_DISPATCH(void, rms_norm_f32,
                    (const float* x, int64_t rows, int64_t E, const float* weight, float eps,
                     float* y),
                    (x, rows, E, weight, eps, y))

}  // namespace fastdecode::kernels
