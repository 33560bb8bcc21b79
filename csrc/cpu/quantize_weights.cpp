// The weight quantizers on the CPU (fastdecode::quantize_int8_per_channel,
// quantize_int4_grouped): input checks, padding, the row-parallel loop around
// csrc/kernels/quantize, then the int4 16-row tiling.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "cpu/ops.h"
#include "kernels/int4_layout.h"
#include "kernels/quantize.h"

namespace fastdecode::cpu {
namespace {

constexpr int64_t kRowsPerTask = 64;

void check_weight_input(const char* op, const at::Tensor& w) {
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w must be 2-D [N, K], got shape ", w.sizes());
  TORCH_CHECK_TYPE(w.is_floating_point(), op, ": w must be a floating tensor, got ",
                   w.scalar_type());
  TORCH_CHECK_VALUE(w.device().is_cpu(), op, ": w must be a CPU tensor");
  TORCH_CHECK_VALUE(w.size(0) > 0 && w.size(1) > 0, op, ": w must be non-empty, got ",
                    w.sizes());
  TORCH_CHECK_VALUE(at::isfinite(w).all().item<bool>(), op, ": w contains NaN or infinity");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> quantize_int8_per_channel(const at::Tensor& w) {
  constexpr const char* op = "fastdecode::quantize_int8_per_channel";
  check_weight_input(op, w);
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t N = wf.size(0), K = wf.size(1);
  at::Tensor q = at::empty({N, K}, wf.options().dtype(at::kChar));
  at::Tensor scales = at::empty({N}, wf.options());
  const float* wp = wf.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = scales.data_ptr<float>();
  at::parallel_for(0, N, kRowsPerTask, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) sp[n] = kernels::quantize_int8_row(wp + n * K, K, qp + n * K);
  });
  return {q, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_int4_grouped(const at::Tensor& w, int64_t groupsize) {
  constexpr const char* op = "fastdecode::quantize_int4_grouped";
  check_weight_input(op, w);
  TORCH_CHECK_VALUE(kernels::is_int4_groupsize(groupsize), op,
                    ": groupsize must be one of ", kernels::int4_groupsizes_text(), ", got ",
                    groupsize);
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t K_pad = (K + groupsize - 1) / groupsize * groupsize;
  at::Tensor wf = w.to(at::kFloat).contiguous();
  if (K_pad > K) wf = at::constant_pad_nd(wf, {0, K_pad - K}, 0.0);  // zeros join the last group
  // rows are quantized in row-major order, then regrouped into 16-row tiles
  at::Tensor rows_packed = at::empty({N, K_pad / 2}, wf.options().dtype(at::kByte));
  at::Tensor rows_sz = at::empty({N, K_pad / groupsize, 2}, wf.options());
  const float* wp = wf.data_ptr<float>();
  uint8_t* pp = rows_packed.data_ptr<uint8_t>();
  float* szp = rows_sz.data_ptr<float>();
  at::parallel_for(0, N, kRowsPerTask, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      kernels::quantize_int4_row(wp + n * K_pad, K_pad, groupsize, pp + n * (K_pad / 2),
                                 szp + n * (K_pad / groupsize) * 2);
    }
  });
  return tile_int4(rows_packed, rows_sz);
}

std::tuple<at::Tensor, at::Tensor> tile_int4(const at::Tensor& rows_packed,
                                             const at::Tensor& rows_sz) {
  const int64_t N = rows_packed.size(0);
  at::Tensor packed = at::empty_like(rows_packed), sz = at::empty_like(rows_sz);
  kernels::tile_words(reinterpret_cast<const uint32_t*>(rows_packed.data_ptr<uint8_t>()), N,
                      rows_packed.size(1) / 4,
                      reinterpret_cast<uint32_t*>(packed.data_ptr<uint8_t>()));
  kernels::tile_words(reinterpret_cast<const uint32_t*>(rows_sz.data_ptr<float>()), N,
                      rows_sz.size(1) * 2, reinterpret_cast<uint32_t*>(sz.data_ptr<float>()));
  return {packed, sz};
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("quantize_int8_per_channel", &quantize_int8_per_channel);
  m.impl("quantize_int4_grouped", &quantize_int4_grouped);
}

}  // namespace fastdecode::cpu
