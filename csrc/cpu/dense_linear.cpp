// fastdecode::linear on the CPU: our streaming GEMV for decode-sized inputs (few rows); for
// more rows (prefill, large batches: compute bound) our GEMM on the avx512 and avx2 paths
// (kernels/dense_gemm.h: 1.2-2x MKL's SGEMM here) and ATen's BLAS-backed linear elsewhere.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

#include "cpu/parallel.h"
#include "cpu/ops.h"
#include "kernels/dense_gemm.h"
#include "kernels/dense_gemv.h"

namespace fastdecode::cpu {
namespace {

// Rows of x up to which the GEMV path is used: each weight row is then read once for all
// rows while it is in L1, which beats a BLAS GEMM that is tuned for large M.
constexpr int64_t kMaxGemvRows = 16;
// Output rows per task: 64 rows x K=576 fp32 = 144 KiB of weights, enough to amortise the
// task dispatch and to keep the hardware prefetcher streaming.
constexpr int64_t kRowsPerTask = 64;

// y [M, N] = x [M, K] . w [N, K]^T by the kernel `gemv` or `gemm`, N split across threads:
// the decode path's loop for the GEMV; for the GEMM, ATen's OpenMP threads, which prefill's
// other ops (attention, elementwise) run on: a second team beside them would share the
// cores with OpenMP's spinning workers (measured: a third of a 512-position prefill).
template <bool kOpenMP, typename Kernel>
at::Tensor linear_rows(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, int64_t grain,
                       const Kernel& kernel) {
  const int64_t K = weight.size(1), N = weight.size(0), M = x.numel() / K;
  const at::Tensor x2 = x.reshape({M, K}).contiguous();
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = x2.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  auto columns = [&](int64_t begin, int64_t end) {
    kernel(xp, K, M, K, wp, K, begin, end, yp, N);
  };
  if constexpr (kOpenMP) {
    at::parallel_for(0, N, grain, columns);
  } else {
    parallel_for(N, grain, columns);
  }
  if (bias.has_value()) y.add_(*bias);
  return y.view(out_shape);
}

}  // namespace

LinearShape dense_linear_shape(const char* op, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weight must be 2-D [N, K], got ", weight.sizes());
  TORCH_CHECK_TYPE(weight.is_floating_point(), op, ": weight must be a floating tensor, got ",
                   weight.scalar_type());
  return {weight.size(0), weight.size(1), weight.size(1)};
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "fastdecode::linear";
  dense_linear_shape(op, weight);
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == weight.size(1), op,
                    ": x must have shape [..., K] with K = weight.size(1) = ", weight.size(1),
                    ", got ", x.sizes());
  TORCH_CHECK_TYPE(x.is_floating_point() && x.scalar_type() == weight.scalar_type(), op,
                   ": x and weight must share one floating dtype, got ", x.scalar_type(),
                   " and ", weight.scalar_type());
  TORCH_CHECK_VALUE(x.device() == weight.device(), op,
                    ": x and weight must be on the same device");
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                      ": bias must have shape [N] = [", weight.size(0), "], got ",
                      bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), op, ": bias must be ",
                     x.scalar_type(), " like x, got ", bias->scalar_type());
    TORCH_CHECK_VALUE(bias->device() == x.device(), op, ": bias must be on x's device");
  }
  const int64_t K = weight.size(1);
  const int64_t M = K == 0 ? 0 : x.numel() / K;
  if (x.scalar_type() != at::kFloat || M == 0 || !weight.is_contiguous()) {
    return at::linear(x, weight, bias);
  }
  if (M <= kMaxGemvRows) return linear_rows<false>(x, weight, bias, kRowsPerTask, kernels::gemv_f32);
  if (kernels::gemm_f32_available()) {
    return linear_rows<true>(x, weight, bias, kernels::kGemmColumnsPerTask, kernels::gemm_f32);
  }
  return at::linear(x, weight, bias);
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("linear", &linear); }

}  // namespace fastdecode::cpu
