// fastdecode::int8_embedding and int4_embedding on the CPU: rows of a quantized table (a tied
// output head's weight) dequantised on lookup, so a quantized model keeps no fp32 copy of
// its embedding (V x dim x 4 bytes: 113 MB for the default model).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "kernels/int4_layout.h"
#include "kernels/int8_layout.h"
#include "kernels/quantize.h"

namespace fastdecode::cpu {
namespace {

constexpr int64_t kRowsPerTask = 256;

// ids: int64 of any shape, every value in [0, rows). Returns them contiguous.
at::Tensor check_ids(const char* op, const at::Tensor& ids, int64_t rows) {
  TORCH_CHECK_TYPE(ids.scalar_type() == at::kLong, op, ": ids must be int64, got ",
                   ids.scalar_type());
  TORCH_CHECK_VALUE(ids.device().is_cpu(), op, ": ids must be a CPU tensor");
  at::Tensor flat = ids.contiguous();
  if (flat.numel() > 0) {
    const int64_t lo = flat.min().item<int64_t>(), hi = flat.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < rows, op, ": ids must be in [0, ", rows,
                      ") (the table's rows), got values in [", lo, ", ", hi, "]");
  }
  return flat;
}

// out [*ids.shape, dim]: row(id, dst) writes the K_table values of table row id into dst
// (K_table >= dim; a padded int4 table dequantises into a scratch row first).
template <typename RowFn>
at::Tensor gather_rows(const at::Tensor& ids, int64_t dim, int64_t K_table, RowFn row) {
  auto shape = ids.sizes().vec();
  shape.push_back(dim);
  at::Tensor out = at::empty(shape, ids.options().dtype(at::kFloat));
  const int64_t n = ids.numel();
  if (n == 0 || dim == 0) return out;  // nothing to read (a table of width 0 has no groups)
  const int64_t* ip = ids.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  // rows on the decode path's own loop (at::parallel_for here woke OpenMP's threads, whose
  // spinning took a fifth of a 32-position prompt call from the pool's); one row is a few
  // hundred values, so a prompt's lookup runs on one thread below 256 ids
  parallel_for(n, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(K_table > dim ? K_table : 0);
    for (int64_t i = begin; i < end; ++i) {
      float* dst = K_table > dim ? scratch.data() : op + i * dim;
      row(ip[i], dst);
      if (K_table > dim) std::copy(scratch.begin(), scratch.begin() + dim, op + i * dim);
    }
  });
  return out;
}

}  // namespace

at::Tensor int8_embedding(const at::Tensor& ids, const at::Tensor& q, const at::Tensor& scales) {
  constexpr const char* op = "fastdecode::int8_embedding";
  const LinearShape shape = int8_linear_shape(op, q, scales);
  const at::Tensor flat = check_ids(op, ids, shape.out_features);
  const at::Tensor qc = q.contiguous(), sc = scales.contiguous();
  const int64_t K = shape.in_max, G = scales.dim() == 1 ? K : K / scales.size(1);
  const float* sp = sc.data_ptr<float>();
  if (q.scalar_type() == at::kByte) {  // the tiled layout (a tied head tiled for the GEMV)
    const uint8_t* pp = qc.data_ptr<uint8_t>();
    const int64_t N = shape.out_features;
    return gather_rows(flat, K, K, [&](int64_t id, float* dst) {
      kernels::dequantize_int8_tiled_row(pp, sp, N, K, G, id, dst);
    });
  }
  const int8_t* qp = qc.data_ptr<int8_t>();
  return gather_rows(flat, K, K, [&](int64_t id, float* dst) {
    kernels::dequantize_int8_rows(qp, sp, K, G, id, id + 1, dst);
  });
}

at::Tensor int4_embedding(const at::Tensor& ids, const at::Tensor& packed,
                          const at::Tensor& scales_and_zeros, int64_t groupsize, int64_t dim) {
  constexpr const char* op = "fastdecode::int4_embedding";
  const LinearShape shape = int4_linear_shape(op, packed, scales_and_zeros, groupsize);
  TORCH_CHECK_VALUE(dim >= shape.in_min && dim <= shape.in_max, op, ": dim must be in [",
                    shape.in_min, ", ", shape.in_max, "] (the table's padded width ",
                    shape.in_max, " less under one group), got ", dim);
  const at::Tensor flat = check_ids(op, ids, shape.out_features);
  const at::Tensor pc = packed.contiguous(), sc = scales_and_zeros.contiguous();
  const int64_t N = shape.out_features, K_pad = shape.in_max;
  const uint8_t* pp = pc.data_ptr<uint8_t>();
  const float* sp = sc.data_ptr<float>();
  return gather_rows(flat, dim, K_pad, [&](int64_t id, float* dst) {
    kernels::dequantize_int4_row(pp, sp, N, K_pad, groupsize, id, dst);
  });
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("int8_embedding", &int8_embedding);
  m.impl("int4_embedding", &int4_embedding);
}

}  // namespace fastdecode::cpu
