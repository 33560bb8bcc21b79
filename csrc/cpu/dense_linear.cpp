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

}  // namespace

void gemm_f32_parallel(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w,
                       int64_t ldw, int64_t N, float* y, int64_t ldy) {
  at::parallel_for(0, N, kernels::kGemmColumnsPerTask, [&](int64_t begin, int64_t end) {
    kernels::gemm_f32(x, ldx, M, K, w, ldw, begin, end, y, ldy);
  });
}

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
  const bool gemv = M <= kMaxGemvRows;
  if (x.scalar_type() != at::kFloat || M == 0 || !weight.is_contiguous() ||
      (!gemv && !kernels::gemm_f32_available())) {
    return at::linear(x, weight, bias);
  }
  const int64_t N = weight.size(0);
  const at::Tensor x2 = x.reshape({M, K}).contiguous();
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = x2.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (gemv) {
    parallel_for(N, kRowsPerTask, [&](int64_t begin, int64_t end) {
      kernels::gemv_f32(xp, K, M, K, wp, K, begin, end, yp, N);
    });
  } else {
    gemm_f32_parallel(xp, K, M, K, wp, K, N, yp, N);
  }
  if (bias.has_value()) y.add_(*bias);
  return y.view(out_shape);
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("linear", &linear); }

}  // namespace fastdecode::cpu
