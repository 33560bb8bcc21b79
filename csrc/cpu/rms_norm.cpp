// fastdecode::rms_norm on the CPU: fp32 rows through the one-pass kernel, other dtypes
// through ATen (normalise in fp32, scale in the input dtype, Hugging Face's order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "cpu/parallel.h"
#include "cpu/ops.h"
#include "kernels/rms_norm.h"

namespace fastdecode::cpu {

// Rows per task: a decode step has one row; prefill has S rows of E ~ 1e3 floats each.
constexpr int64_t kRowsPerTask = 16;

void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         double eps) {
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have shape [..., E], got a 0-d tensor");
  const int64_t E = x.size(-1);
  TORCH_CHECK_VALUE(weight.dim() == 1 && weight.size(0) == E, op,
                    ": weight must have shape [E] = [", E, "], got ", weight.sizes());
  TORCH_CHECK_TYPE(x.is_floating_point() && weight.scalar_type() == x.scalar_type(), op,
                   ": x and weight must share one floating dtype, got ", x.scalar_type(),
                   " and ", weight.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == x.device(), op, ": x and weight must be on one device");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0.0, op,
                    ": eps must be a finite number > 0, got ", eps);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  constexpr const char* op = "fastdecode::rms_norm";
  check_rms_norm_args(op, x, weight, eps);
  const int64_t E = x.size(-1);
  if (x.scalar_type() != at::kFloat || !x.device().is_cpu()) {
    const at::Tensor xf = x.to(at::kFloat);
    const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps);
    return weight * normed.to(x.scalar_type());
  }
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor y = at::empty_like(xc);
  const int64_t rows = E == 0 ? 0 : xc.numel() / E;
  const float* xp = xc.data_ptr<float>();
  const float* wp = wc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float e = static_cast<float>(eps);
  parallel_for(rows, kRowsPerTask, [&](int64_t b, int64_t end) {
    kernels::rms_norm_f32(xp + b * E, end - b, E, wp, e, yp + b * E);
  });
  return y;
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("rms_norm", &rms_norm); }

}  // namespace fastdecode::cpu
