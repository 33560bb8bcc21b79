// The quantized linears' path for many activation rows (prefill, long inputs): a GEMM over
// the weight dequantised block by block (csrc/cpu/quantized_linear.cpp decides when, and
// dequantises its own formats).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "cpu/ops.h"
#include "kernels/dense_gemm.h"
#include "kernels/int4_layout.h"

namespace fastdecode::cpu {

at::Tensor dequantized_gemm(const at::Tensor& xa, int64_t N, const Dequantise& dequantise) {
  // The op has no gradient; without this guard an x that requires grad (a model called
  // outside torch.no_grad()) makes mm_out refuse its out= argument.
  at::NoGradGuard no_grad;
  const int64_t M = xa.size(0), K_pad = xa.size(1);
  // a block: ~1 MB of fp32, whole 16-row tiles (the int4 and tiled int8 layouts' unit)
  const int64_t tile = kernels::kInt4TileRows;
  const int64_t block = std::max<int64_t>(tile, (int64_t{1} << 18) / K_pad / tile * tile);
  const bool own_gemm = kernels::gemm_f32_available();
  // ours writes each block's columns of y in place; ATen's, y transposed (a block's rows
  // contiguous)
  at::Tensor y = own_gemm ? at::empty({M, N}, xa.options()) : at::empty({N, M}, xa.options());
  at::Tensor buffer = at::empty({std::min(block, N), K_pad}, xa.options());
  const at::Tensor xt = xa.t();
  const float* xp = xa.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* dst = buffer.data_ptr<float>();
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t nb = std::min(block, N - n0);
    at::parallel_for(0, (nb + tile - 1) / tile, 1, [&](int64_t t0, int64_t t1) {
      dequantise(n0 + t0 * tile, n0 + std::min(t1 * tile, nb), dst + t0 * tile * K_pad);
    });
    if (own_gemm) {
      gemm_f32_parallel(xp, K_pad, M, K_pad, dst, K_pad, nb, yp + n0, N);
    } else {
      at::Tensor out = y.narrow(0, n0, nb);
      at::mm_out(out, buffer.narrow(0, 0, nb), xt);
    }
  }
  return own_gemm ? y : y.t().contiguous();
}

}  // namespace fastdecode::cpu
