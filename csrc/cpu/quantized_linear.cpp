// Weight-only quantized linears on the CPU: input checks and the row-parallel loop around
// csrc/kernels/qgemv (their activation pass: csrc/cpu/gemv_activations.cpp); many rows go
// to dequantized_gemm (csrc/cpu/dequantized_gemm.cpp; the quantizers:
// csrc/cpu/quantize_weights.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/gemv_activations.h"
#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "kernels/int4_layout.h"
#include "kernels/int8_layout.h"
#include "kernels/qgemv.h"
#include "kernels/quantize.h"

namespace fastdecode::cpu {
namespace {

// Up to this many activation rows the integer kernels run (their cost grows with every row);
// above it, a GEMM over the weight dequantised block by block (dequantized_gemm): prefill
// is compute bound, and each block's dequantisation is amortised over all rows.
constexpr int64_t kMaxGemvRows = kernels::kQuantizedGemvMaxRows;
// Weight-row products per GEMV chunk (weights x activation rows; ~256 KB of int8 at one
// row): chunks are claimed dynamically, so many small ones balance the threads; a call
// under one chunk runs on the calling thread alone. Divided by the rows, since the kernels
// are compute bound above one row: a fixed weight count left one thread a 28-tile chunk
// and the other 8 on a 36-tile int4 layer at 16 rows (the caller spun 20% of the time).
constexpr int64_t kProductsPerTask = 1 << 18;

int64_t weights_per_task(int64_t rows) {
  return kProductsPerTask / std::max<int64_t>(rows, 1);
}

at::Tensor finish(at::Tensor y, const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  if (bias.has_value()) y.add_(*bias);
  auto shape = x.sizes().vec();
  shape.back() = y.size(1);
  return y.view(shape).to(x.scalar_type());
}

void check_x(const char* op, const at::Tensor& x, int64_t K) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), op, ": x must be a CPU tensor");
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == K, op,
                    ": x must have shape [..., K] with K = ", K, ", got ", x.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op,
                   ": x must be float32, bfloat16 or float16, got ", dt);
}

void check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t N) {
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, op,
                      ": bias must have shape [N] = [", N, "], got ", bias->sizes());
    TORCH_CHECK_TYPE(bias->is_floating_point(), op, ": bias must be a floating tensor, got ",
                     bias->scalar_type());
    TORCH_CHECK_VALUE(bias->device().is_cpu(), op, ": bias must be a CPU tensor");
  }
}

// fp32 [..., N] for x [..., K].
at::Tensor gemv_output(const at::Tensor& x, int64_t N) {
  auto shape = x.sizes().vec();
  shape.back() = N;
  return at::empty(shape, x.options().dtype(at::kFloat));
}

at::Tensor finish_gemv(at::Tensor y, const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  if (bias.has_value()) y.add_(*bias);
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

// fn(j, begin, end) over the ranges [0, counts[j]) of several weights in one parallel
// region: a decoder layer's gate and up projections share their input, their activation
// quantization and one fork-join.
template <typename Fn>
void parallel_over_weights(const std::vector<int64_t>& counts, int64_t grain, const Fn& fn) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  parallel_for(total, grain, [&](int64_t begin, int64_t end) {
    int64_t base = 0;
    for (size_t j = 0; j < counts.size(); ++j) {
      const int64_t lo = std::max(begin, base), hi = std::min(end, base + counts[j]);
      if (lo < hi) fn(j, lo - base, hi - base);
      base += counts[j];
    }
  });
}

// The checked arguments of one int8 / int4 linear. tiled: q is uint8 in the 16-row tiles of
// kernels/int8_layout.h (and its grouped scales tiled alike), else int8 row-major.
struct Int8Weight {
  at::Tensor q, scales;
  int64_t N, K, G;
  bool tiled;
};
struct Int4Weight {
  at::Tensor packed, sz;
  int64_t N, K_pad, G;
};

Int8Weight check_int8_weight(const char* op, const at::Tensor& q, const at::Tensor& scales) {
  const bool tiled = q.scalar_type() == at::kByte;
  TORCH_CHECK_TYPE(q.scalar_type() == at::kChar || tiled, op,
                   ": q must be int8 (row-major) or uint8 (tiled by tile_int8), got ",
                   q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 2 && q.device().is_cpu(), op,
                    ": q must be a 2-D CPU tensor [N, K], got ", q.sizes());
  const int64_t N = q.size(0), K = q.size(1);
  TORCH_CHECK_TYPE(scales.scalar_type() == at::kFloat, op, ": scales must be float32, got ",
                   scales.scalar_type());
  TORCH_CHECK_VALUE(scales.dim() >= 1 && scales.size(0) == N && scales.device().is_cpu() &&
                        (scales.dim() == 1 || (scales.dim() == 2 && scales.size(1) > 0 &&
                                               K % scales.size(1) == 0)),
                    op, ": scales must be [N] (per channel) or [N, K / G] (groups of G), "
                    "with N = ", N, " and K = ", K, "; got ", scales.sizes());
  const int64_t G = scales.dim() == 1 ? K : K / scales.size(1);
  TORCH_CHECK_VALUE(G == K || G % 32 == 0, op, ": grouped scales need a group size that is a "
                    "multiple of 32, got ", G, " (K = ", K, ", ", scales.size(1), " groups)");
  TORCH_CHECK_VALUE(!tiled || K % 32 == 0, op, ": a tiled (uint8) q needs K a multiple of 32, "
                    "got K = ", K);
  return {q.contiguous(), scales.contiguous(), N, K, G, tiled};
}

Int8Weight check_int8(const char* op, const at::Tensor& x, const at::Tensor& q,
                      const at::Tensor& scales) {
  Int8Weight w = check_int8_weight(op, q, scales);
  check_x(op, x, w.K);
  return w;
}

Int4Weight check_int4_weight(const char* op, const at::Tensor& packed, const at::Tensor& sz,
                             int64_t groupsize) {
  TORCH_CHECK_VALUE(kernels::is_int4_groupsize(groupsize), op,
                    ": groupsize must be one of ", kernels::int4_groupsizes_text(),
                    ", got ", groupsize);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte, op, ": packed must be uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() == 2 && packed.device().is_cpu(), op,
                    ": packed must be a 2-D CPU tensor [N, K_pad / 2], got ", packed.sizes());
  const int64_t N = packed.size(0), K_pad = packed.size(1) * 2;
  TORCH_CHECK_VALUE(K_pad % groupsize == 0, op, ": packed holds ", K_pad,
                    " columns, not a multiple of groupsize ", groupsize);
  TORCH_CHECK_TYPE(sz.scalar_type() == at::kFloat, op,
                   ": scales_and_zeros must be float32, got ", sz.scalar_type());
  TORCH_CHECK_VALUE(sz.dim() == 3 && sz.size(0) == N && sz.size(1) == K_pad / groupsize &&
                        sz.size(2) == 2 && sz.device().is_cpu(),
                    op, ": scales_and_zeros must be [N, K_pad / groupsize, 2] = [", N, ", ",
                    K_pad / groupsize, ", 2], got ", sz.sizes());
  return {packed.contiguous(), sz.contiguous(), N, K_pad, groupsize};
}

Int4Weight check_int4(const char* op, const at::Tensor& x, const at::Tensor& packed,
                      const at::Tensor& sz, int64_t groupsize) {
  Int4Weight w = check_int4_weight(op, packed, sz, groupsize);
  const int64_t K_pad = w.K_pad;
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) <= K_pad && x.size(-1) > K_pad - groupsize,
                    op, ": x must have shape [..., K] with K in (", K_pad - groupsize, ", ",
                    K_pad, "] (the packed in-features, padded to the group), got ", x.sizes());
  check_x(op, x, x.size(-1));
  return w;
}

// More than kMaxGemvRows rows (or x holding NaN / inf): dequantized_gemm (cpu/ops.h) over
// this weight's rows dequantised block by block.
at::Tensor int8_gemm(const at::Tensor& x, const Int8Weight& w,
                     const std::optional<at::Tensor>& bias) {
  const float* scales = w.scales.data_ptr<float>();
  Dequantise rows;
  if (w.tiled) {  // dequantized_gemm's blocks are whole tiles
    const uint8_t* packed = w.q.data_ptr<uint8_t>();
    const int64_t groups = w.K / w.G;
    rows = [&w, packed, scales, groups](int64_t n0, int64_t n1, float* dst) {
      kernels::dequantize_int8_tiled(packed + n0 * w.K, scales + n0 * groups, n1 - n0, w.K, w.G,
                                     dst);
    };
  } else {
    const int8_t* q = w.q.data_ptr<int8_t>();
    rows = [&w, q, scales](int64_t n0, int64_t n1, float* dst) {
      kernels::dequantize_int8_rows(q, scales, w.K, w.G, n0, n1, dst);
    };
  }
  return finish(dequantized_gemm(activations(x, w.K, w.K), w.N, rows), x, bias);
}

at::Tensor int4_gemm(const at::Tensor& x, const Int4Weight& w,
                     const std::optional<at::Tensor>& bias) {
  const uint8_t* packed = w.packed.data_ptr<uint8_t>();
  const float* sz = w.sz.data_ptr<float>();
  const int64_t groups = w.K_pad / w.G;
  const Dequantise rows = [&w, packed, sz, groups](int64_t n0, int64_t n1, float* dst) {
    kernels::dequantize_int4(packed + n0 * w.K_pad / 2, sz + n0 * groups * 2, n1 - n0, w.K_pad,
                             w.G, dst);
  };
  return finish(dequantized_gemm(activations(x, x.size(-1), w.K_pad), w.N, rows), x, bias);
}

// x [..., K] with no element, or no out-feature: the empty sum, [..., N] zeros (+ bias).
at::Tensor empty_product(const at::Tensor& x, int64_t N, const std::optional<at::Tensor>& bias) {
  auto shape = x.sizes().vec();
  shape.back() = N;
  at::Tensor y = at::zeros(shape, x.options().dtype(at::kFloat));
  if (bias.has_value()) y.add_(*bias);
  return y.to(x.scalar_type());
}

// The GEMV path (up to kMaxGemvRows rows of x) of weights of one kind sharing K, fp32
// outputs: NaN / inf activations take the GEMM path (they propagate exactly as in float);
// otherwise each weight's `units(w)` units (rows or 16-row tiles) are claimed in chunks of
// `per_task` and run by kernel(w, begin, end, y).
template <typename Weight, typename Gemm, typename Units, typename Kernel>
std::vector<at::Tensor> gemv_many(const at::Tensor& x, const std::vector<Weight>& ws,
                                  bool finite, const Gemm& gemm, const Units& units,
                                  int64_t per_task, const Kernel& kernel) {
  std::vector<at::Tensor> ys;
  if (!finite) {
    for (const Weight& w : ws) ys.push_back(gemm(x, w, std::nullopt));
    return ys;
  }
  std::vector<int64_t> counts;
  for (const Weight& w : ws) {
    ys.push_back(gemv_output(x, w.N));
    counts.push_back(units(w));
  }
  parallel_over_weights(counts, std::max<int64_t>(1, per_task),
                        [&](size_t j, int64_t b, int64_t e) { kernel(ws[j], b, e, ys[j]); });
  return ys;
}

// int8 weights sharing K: units are rows, or 16-row tiles when tiled. The activation pass
// is the layout's (tiles take block sums, rows a K padded to 32), so weights of both
// layouts run as two calls.
std::vector<at::Tensor> int8_gemv_many(const at::Tensor& x, const std::vector<Int8Weight>& ws) {
  const int64_t K = ws[0].K;
  constexpr int64_t tile = kernels::kInt4TileRows;
  for (size_t j = 1; j < ws.size(); ++j) {
    if (ws[j].tiled != ws[0].tiled) {
      std::vector<at::Tensor> ys;
      for (const Int8Weight& w : ws) ys.push_back(int8_gemv_many(x, {w})[0]);
      return ys;
    }
  }
  if (ws[0].tiled) {
    const GemvActivations a = gemv_activations(x, K, K, K, 0, /*block_sums=*/true,
                                               /*split=*/true);
    return gemv_many(
        x, ws, a.finite, int8_gemm, [](const Int8Weight& w) { return (w.N + tile - 1) / tile; },
        weights_per_task(a.view.M) / (tile * K),
        [&](const Int8Weight& w, int64_t b, int64_t e, at::Tensor& y) {
          kernels::int8_tiled_gemv(a.view, a.bsum, w.q.data_ptr<uint8_t>(),
                                   w.scales.data_ptr<float>(), w.N, w.G, b, e,
                                   y.data_ptr<float>(), w.N);
        });
  }
  const GemvActivations a = gemv_activations(x, K, K, (K + 31) / 32 * 32, 0);
  return gemv_many(
      x, ws, a.finite, int8_gemm, [](const Int8Weight& w) { return w.N; },
      weights_per_task(a.view.M) / K,
      [&](const Int8Weight& w, int64_t b, int64_t e, at::Tensor& y) {
        kernels::int8_gemv(a.view, w.q.data_ptr<int8_t>(), w.scales.data_ptr<float>(), K, w.G,
                           b, e, y.data_ptr<float>(), w.N);
      });
}

// int4 weights sharing K_pad and the group size: units are 16-row tiles.
std::vector<at::Tensor> int4_gemv_many(const at::Tensor& x, const std::vector<Int4Weight>& ws) {
  const int64_t K = x.size(-1), K_pad = ws[0].K_pad, G = ws[0].G;
  const GemvActivations a = gemv_activations(x, K, K_pad, K_pad, G, /*block_sums=*/true);
  constexpr int64_t tile = kernels::kInt4TileRows;
  return gemv_many(
      x, ws, a.finite, int4_gemm,
      [](const Int4Weight& w) { return (w.N + tile - 1) / tile; },
      weights_per_task(a.view.M) / (tile * K_pad),
      [&](const Int4Weight& w, int64_t b, int64_t e, at::Tensor& y) {
        kernels::int4_gemv(a.view, a.bsum, a.xsum, w.packed.data_ptr<uint8_t>(),
                           w.sz.data_ptr<float>(), w.N, G, b, e, y.data_ptr<float>(), w.N);
      });
}

}  // namespace

LinearShape int8_linear_shape(const char* op, const at::Tensor& q, const at::Tensor& scales) {
  const Int8Weight w = check_int8_weight(op, q, scales);
  return {w.N, w.K, w.K};
}

LinearShape int4_linear_shape(const char* op, const at::Tensor& packed, const at::Tensor& sz,
                              int64_t groupsize) {
  const Int4Weight w = check_int4_weight(op, packed, sz, groupsize);
  return {w.N, std::max<int64_t>(w.K_pad - groupsize + 1, 0), w.K_pad};
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales,
                       const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "fastdecode::int8_linear";
  const Int8Weight w = check_int8(op, x, q, scales);
  check_bias(op, bias, w.N);
  if (x.numel() == 0 || w.N == 0) return empty_product(x, w.N, bias);
  if (x.numel() / w.K > kMaxGemvRows) return int8_gemm(x, w, bias);
  return finish_gemv(int8_gemv_many(x, {w})[0], x, bias);
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& packed,
                       const at::Tensor& scales_and_zeros, int64_t groupsize,
                       const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "fastdecode::int4_linear";
  const Int4Weight w = check_int4(op, x, packed, scales_and_zeros, groupsize);
  check_bias(op, bias, w.N);
  if (x.numel() == 0 || w.N == 0) return empty_product(x, w.N, bias);
  if (x.numel() / x.size(-1) > kMaxGemvRows) return int4_gemm(x, w, bias);
  return finish_gemv(int4_gemv_many(x, {w})[0], x, bias);
}

std::tuple<at::Tensor, at::Tensor> int8_linear_pair(const at::Tensor& x, const at::Tensor& q_a,
                                                    const at::Tensor& scales_a,
                                                    const at::Tensor& q_b,
                                                    const at::Tensor& scales_b) {
  constexpr const char* op = "fastdecode::int8_linear";
  const Int8Weight a = check_int8(op, x, q_a, scales_a), b = check_int8(op, x, q_b, scales_b);
  if (x.numel() == 0 || a.N == 0 || b.N == 0) {
    return {empty_product(x, a.N, std::nullopt), empty_product(x, b.N, std::nullopt)};
  }
  if (x.numel() / a.K > kMaxGemvRows) {
    return {int8_gemm(x, a, std::nullopt), int8_gemm(x, b, std::nullopt)};
  }
  const std::vector<at::Tensor> ys = int8_gemv_many(x, {a, b});
  return {finish_gemv(ys[0], x, std::nullopt), finish_gemv(ys[1], x, std::nullopt)};
}

std::tuple<at::Tensor, at::Tensor> int4_linear_pair(const at::Tensor& x,
                                                    const at::Tensor& packed_a,
                                                    const at::Tensor& sz_a, int64_t groupsize_a,
                                                    const at::Tensor& packed_b,
                                                    const at::Tensor& sz_b, int64_t groupsize_b) {
  constexpr const char* op = "fastdecode::int4_linear";
  const Int4Weight a = check_int4(op, x, packed_a, sz_a, groupsize_a);
  const Int4Weight b = check_int4(op, x, packed_b, sz_b, groupsize_b);
  if (x.numel() == 0 || a.N == 0 || b.N == 0) {
    return {empty_product(x, a.N, std::nullopt), empty_product(x, b.N, std::nullopt)};
  }
  if (x.numel() / x.size(-1) > kMaxGemvRows) {
    return {int4_gemm(x, a, std::nullopt), int4_gemm(x, b, std::nullopt)};
  }
  // the shared activation pass includes group sums: one group size for both
  const std::vector<at::Tensor> ys = a.G == b.G ? int4_gemv_many(x, {a, b})
                                                : std::vector<at::Tensor>{
                                                      int4_gemv_many(x, {a})[0],
                                                      int4_gemv_many(x, {b})[0]};
  return {finish_gemv(ys[0], x, std::nullopt), finish_gemv(ys[1], x, std::nullopt)};
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int4_linear", &int4_linear);
}

}  // namespace fastdecode::cpu
