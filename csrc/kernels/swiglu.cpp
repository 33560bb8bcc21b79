#include "kernels/swiglu.h"

#include "kernels/fast_exp.h"
#include "kernels/simd.h"

namespace fastdecode::kernels {

// fast_expf, not std::exp: a libm call per value kept this loop scalar (3 us for the default
// model's 1536 values, 0.1 ms a token). exp(-g) beyond fp32's range: 0 (g > 87.3, silu = g)
// or clamped to exp(88.3) (g < -88.3, silu ~ -0).
FASTDECODE_KERNEL_BODY
void silu_mul_body(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + fast_expf(-gate[i])) * up[i];
}
FASTDECODE_DISPATCH(void, silu_mul, (const float* gate, const float* up, int64_t n, float* out),
                    (gate, up, n, out))

FASTDECODE_KERNEL_BODY
void add_rows_body(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
FASTDECODE_DISPATCH(void, add_rows, (const float* a, const float* b, int64_t n, float* out),
                    (a, b, n, out))

}  // namespace fastdecode::kernels
