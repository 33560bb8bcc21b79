// Torch-free SwiGLU gate: out = silu(gate) * up = gate / (1 + exp(-gate)) * up.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// gate, up, out: [n] (out may alias gate or up). exp to ~2 ulp (fast_exp.h).
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

// out = a + b, [n] each (out may alias a or b).
void add_rows(const float* a, const float* b, int64_t n, float* out);

}  // namespace fastdecode::kernels
