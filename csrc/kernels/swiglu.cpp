#include "kernels/swiglu.h"

#include <cmath>

#include "kernels/simd.h"

namespace fastdecode::kernels {

FASTDECODE_MULTIVERSION
void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

FASTDECODE_MULTIVERSION
void add_rows(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace fastdecode::kernels
