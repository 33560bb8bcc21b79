// CPU implementations of the sampling ops: input checks, dtype handling and the row loop.
// The per-row math lives in csrc/kernels/sampling.{h,cpp}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "kernels/sampling.h"

namespace fastdecode::cpu {
namespace {

// [V] or [B, V] view as [B, V]; contiguous fp32 (bf16/fp16 are widened once, up front).
at::Tensor as_rows_f32(const at::Tensor& t) {
  return t.reshape({-1, t.size(-1)}).to(at::kFloat).contiguous();
}

void check_sampling_input(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 1 || t.dim() == 2, op, ": ", name,
              " must have shape [V] or [B, V], got ", t.sizes());
  TORCH_CHECK(t.size(-1) > 0, op, ": ", name, " must have a non-empty last dimension (V >= 1)");
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op, ": ", name,
              " must be float32, bfloat16 or float16, got ", dt);
}

// Grain: one row per task; a row of V = 32k..128k is already ~10-100 us of work.
constexpr int64_t kRowGrain = 1;

}  // namespace

at::Tensor logits_to_probs(const at::Tensor& logits, double temperature,
                           std::optional<int64_t> top_k) {
  constexpr const char* op = "fastdecode::logits_to_probs";
  check_sampling_input(op, "logits", logits);
  TORCH_CHECK(std::isfinite(temperature) && temperature >= 0.0, op,
              ": temperature must be a finite number >= 0 (0 = greedy), got ", temperature);
  TORCH_CHECK(!top_k.has_value() || *top_k >= 0, op,
              ": top_k must be None or >= 0 (0 or None = no top-k filter), got ", *top_k);

  const at::Tensor x = as_rows_f32(logits);
  const int64_t rows = x.size(0);
  const int64_t vocab = x.size(1);
  at::Tensor probs = at::empty({rows, vocab}, x.options());
  // top-k with k >= V keeps every entry, exactly as topk(min(k, V)) does.
  const int64_t k = top_k.has_value() && *top_k > 0 && *top_k < vocab ? *top_k : 0;
  const bool greedy = temperature == 0.0;
  const float inv_temperature = greedy ? 0.0f : static_cast<float>(1.0 / temperature);

  const float* xp = x.data_ptr<float>();
  float* pp = probs.data_ptr<float>();
  std::vector<uint8_t> bad_row(rows, 0);  // 1 = NaN, 2 = no finite maximum
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(k > 0 ? vocab : 0);
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * vocab;
      float* out = pp + r * vocab;
      const kernels::RowMax m = kernels::row_max(row, vocab);
      if (m.has_nan) { bad_row[r] = 1; continue; }
      if (!std::isfinite(m.value)) { bad_row[r] = 2; continue; }
      if (greedy) {
        kernels::one_hot_row(out, vocab, m.index);
        continue;
      }
      const float threshold = k > 0 ? kernels::kth_largest(row, vocab, k, scratch.data())
                                    : -std::numeric_limits<float>::infinity();
      kernels::softmax_row(row, out, vocab, m.value, inv_temperature, threshold);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(bad_row[r] != 1, op, ": logits row ", r, " contains NaN");
    TORCH_CHECK(bad_row[r] != 2, op, ": logits row ", r,
                " has no finite maximum (all -inf, or +inf present)");
  }
  return probs.view(logits.sizes()).to(logits.scalar_type());
}

at::Tensor multinomial_sample_one_no_sync(const at::Tensor& probs,
                                          std::optional<at::Generator> generator) {
  constexpr const char* op = "fastdecode::multinomial_sample_one_no_sync";
  check_sampling_input(op, "probs", probs);
  const at::Tensor p = as_rows_f32(probs);
  const int64_t rows = p.size(0);
  const int64_t vocab = p.size(1);
  // The noise comes from ATen's own Exp(1) sampler with the caller's generator, so a
  // reference computing argmax(probs / empty_like(probs).exponential_(1, generator=g))
  // from the same generator state picks the same index.
  at::Tensor noise = at::empty({rows, vocab}, p.options()).exponential_(1.0, generator);
  at::Tensor out = at::empty({rows, 1}, p.options().dtype(at::kInt));
  const float* pp = p.data_ptr<float>();
  const float* np = noise.data_ptr<float>();
  int32_t* op_ = out.data_ptr<int32_t>();
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      op_[r] = static_cast<int32_t>(
          kernels::exponential_race_argmax(pp + r * vocab, np + r * vocab, vocab));
    }
  });
  // [V] -> [1], [B, V] -> [B, 1]: argmax(..., dim=-1, keepdim=True) as in the reference.
  auto shape = probs.sizes().vec();
  shape.back() = 1;
  return out.view(shape);
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("logits_to_probs", &logits_to_probs);
  m.impl("multinomial_sample_one_no_sync", &multinomial_sample_one_no_sync);
}

}  // namespace fastdecode::cpu
