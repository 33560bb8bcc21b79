// fastdecode::tile_int8 (and in place, tile_int8_) and untile_int8 on the CPU: an int8 weight and its scales between
// the row-major layout (gpt-fast's, the checkpoint's) and the 16-row tiles the kernels
// stream (csrc/kernels/int8_layout.h). Exact: the same bytes and scales, reordered.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "cpu/ops.h"
#include "kernels/int4_layout.h"
#include "kernels/int8_layout.h"

namespace fastdecode::cpu {
namespace {

// Tiles per task: each tile is independent (16 rows, the same bytes in both layouts).
constexpr int64_t kTilesPerTask = 64;

// The group size of a checked weight's scales; q is [N, K] of `dtype` with K a multiple of
// 32, scales [N] or [N, K / G].
int64_t check_layout_args(const char* op, const at::Tensor& q, const at::Tensor& scales,
                          at::ScalarType dtype) {
  TORCH_CHECK_TYPE(q.scalar_type() == dtype, op, ": the weight must be ", dtype, ", got ",
                   q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 2 && q.device().is_cpu(), op,
                    ": the weight must be a 2-D CPU tensor [N, K], got ", q.sizes());
  const int64_t N = q.size(0), K = q.size(1);
  TORCH_CHECK_VALUE(K > 0 && K % 32 == 0, op, ": the tiled layout needs K a positive multiple "
                    "of 32 (whole 32-value blocks), got K = ", K);
  TORCH_CHECK_TYPE(scales.scalar_type() == at::kFloat, op, ": scales must be float32, got ",
                   scales.scalar_type());
  TORCH_CHECK_VALUE(scales.device().is_cpu() && scales.dim() >= 1 && scales.size(0) == N &&
                        (scales.dim() == 1 || (scales.dim() == 2 && scales.size(1) > 0 &&
                                               K % scales.size(1) == 0 &&
                                               (K / scales.size(1)) % 32 == 0)),
                    op, ": scales must be [N] (per channel) or [N, K / G] with G a multiple "
                    "of 32, N = ", N, ", K = ", K, "; got ", scales.sizes());
  return scales.dim() == 1 ? K : K / scales.size(1);
}

// fn(n0, rows): the rows of whole tiles, in parallel.
template <typename Fn>
void over_tiles(int64_t N, const Fn& fn) {
  const int64_t tiles = (N + kernels::kInt4TileRows - 1) / kernels::kInt4TileRows;
  at::parallel_for(0, tiles, kTilesPerTask, [&](int64_t t0, int64_t t1) {
    const int64_t n0 = t0 * kernels::kInt4TileRows;
    fn(n0, std::min(N, t1 * kernels::kInt4TileRows) - n0);
  });
}

// (weight [N, K] of dtype `from`, scales) -> new tensors (weight of dtype `to`, scales), whole
// tiles at a time by move(src bytes, src scales, rows, K, G, dst bytes, dst scales).
template <typename Move>
std::tuple<at::Tensor, at::Tensor> relayout(const char* op, const at::Tensor& w,
                                            const at::Tensor& scales, at::ScalarType from,
                                            at::ScalarType to, const Move& move) {
  const int64_t G = check_layout_args(op, w, scales, from);
  const int64_t N = w.size(0), K = w.size(1), groups = K / G;
  const at::Tensor wc = w.contiguous(), sc = scales.contiguous();
  at::Tensor out = at::empty({N, K}, w.options().dtype(to));
  at::Tensor out_scales = at::empty_like(sc);
  const auto* src = static_cast<const uint8_t*>(wc.data_ptr());
  const float* sp = sc.data_ptr<float>();
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  float* dp = out_scales.data_ptr<float>();
  over_tiles(N, [&](int64_t n0, int64_t rows) {
    move(src + n0 * K, sp + n0 * groups, rows, K, G, dst + n0 * K, dp + n0 * groups);
  });
  return {out, out_scales};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> tile_int8(const at::Tensor& q, const at::Tensor& scales) {
  return relayout("fastdecode::tile_int8", q, scales, at::kChar, at::kByte,
                  [](const uint8_t* src, const float* s, int64_t rows, int64_t K, int64_t G,
                     uint8_t* dst, float* ds) {
                    kernels::tile_int8(reinterpret_cast<const int8_t*>(src), s, rows, K, G, dst,
                                       ds);
                  });
}

void tile_int8_in_place(at::Tensor& q, at::Tensor& scales) {
  constexpr const char* op = "fastdecode::tile_int8_";
  const int64_t G = check_layout_args(op, q, scales, at::kChar);
  TORCH_CHECK_VALUE(q.is_contiguous() && scales.is_contiguous(), op,
                    ": q and scales are rearranged where they are: both must be contiguous");
  TORCH_CHECK_VALUE(q.data_ptr() != scales.data_ptr(), op, ": q and scales must not overlap");
  const int64_t K = q.size(1), groups = K / G;
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = scales.data_ptr<float>();
  over_tiles(q.size(0), [&](int64_t n0, int64_t rows) {
    kernels::tile_int8_in_place(qp + n0 * K, sp + n0 * groups, rows, K, G);
  });
}

std::tuple<at::Tensor, at::Tensor> untile_int8(const at::Tensor& packed,
                                               const at::Tensor& scales) {
  return relayout("fastdecode::untile_int8", packed, scales, at::kByte, at::kChar,
                  [](const uint8_t* src, const float* s, int64_t rows, int64_t K, int64_t G,
                     uint8_t* dst, float* ds) {
                    kernels::untile_int8(src, s, rows, K, G, reinterpret_cast<int8_t*>(dst), ds);
                  });
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("tile_int8", &tile_int8);
  m.impl("tile_int8_", &tile_int8_in_place);
  m.impl("untile_int8", &untile_int8);
}

}  // namespace fastdecode::cpu
