// Torch-free RMSNorm of fp32 rows: y = x * rsqrt(mean(x^2) + eps) * weight.
//
// The decode step normalises two [1, E] rows per layer; as a composite of ATen ops (pow,
// mean, add, rsqrt, mul, mul) that costs ~25 us of dispatch per call against < 1 us of
// arithmetic, so the whole row is done in one pass here.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// x, y: [rows, E] row-major (y may alias x); weight: [E].
void rms_norm_f32(const float* x, int64_t rows, int64_t E, const float* weight, float eps,
                  float* y);

}  // namespace fastdecode::kernels
