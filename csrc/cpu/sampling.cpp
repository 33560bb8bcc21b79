// CPU implementations of the sampling ops: input checks, dtype handling and the row loop.
// The per-row math lives in csrc/kernels/sampling.{h,cpp}.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cpu/parallel.h"
#include "kernels/random.h"
#include "kernels/sampling.h"

namespace fastdecode::cpu {
namespace {

// [V] or [B, V] view as [B, V]; contiguous fp32 (bf16/fp16 are widened once, up front).
at::Tensor as_rows_f32(const at::Tensor& t) {
  return t.reshape({-1, t.size(-1)}).to(at::kFloat).contiguous();
}

void check_sampling_input(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ",
                    t.device());
  TORCH_CHECK_VALUE(t.dim() == 1 || t.dim() == 2, op, ": ", name,
                    " must have shape [V] or [B, V], got ", t.sizes());
  TORCH_CHECK_VALUE(t.size(-1) > 0, op, ": ", name,
                    " must have a non-empty last dimension (V >= 1)");
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op, ": ", name,
                   " must be float32, bfloat16 or float16, got ", dt);
}

// Grain: one row per task; a row of V = 32k..128k is already ~10-100 us of work.
constexpr int64_t kRowGrain = 1;

}  // namespace

namespace {

// Column order of the optional per-row parameter table row_params [B, 5] (float32).
enum ParamColumn { kTemperature = 0, kTopK, kTopP, kMinP, kRepetitionPenalty, kNumParams };

// The knobs as given (double precision), before they are narrowed to the kernel's floats.
struct RawParams {
  double temperature, top_k, top_p, min_p, repetition_penalty;
};

// Range checks shared by the scalar and the per-row forms; `row` < 0 means "scalar". Value
// errors (TORCH_CHECK_VALUE), so Python sees ValueError naming the knob and its range. The
// values are checked as given, then again as the floats the kernel reads: a positive top_p
// or temperature that float32 rounds to 0 is refused (it would change meaning silently).
void check_row_params(const char* op, int64_t row, const RawParams& p) {
  const std::string where = row < 0 ? std::string() : " (row " + std::to_string(row) + ")";
  constexpr double kMinFloat = std::numeric_limits<float>::denorm_min();
  TORCH_CHECK_VALUE(std::isfinite(p.temperature) && p.temperature >= 0.0 &&
                        p.temperature <= std::numeric_limits<float>::max(),
                    op, ": temperature", where,
                    " must be a finite number >= 0 (0 = greedy), got ", p.temperature);
  TORCH_CHECK_VALUE(p.temperature == 0.0 || p.temperature >= kMinFloat, op, ": temperature",
                    where, " must be 0 (greedy) or at least ", kMinFloat,
                    " (the smallest float32), got ", p.temperature);
  TORCH_CHECK_VALUE(p.top_k >= 0 && p.top_k == std::floor(p.top_k) && p.top_k < 9.2e18, op,
                    ": top_k", where,
                    " must be None or an integer in [0, 2^63) (0/None = off), got ", p.top_k);
  TORCH_CHECK_VALUE(p.top_p > 0.0 && p.top_p <= 1.0, op, ": top_p", where,
                    " must be in (0, 1] (1 = off), got ", p.top_p);
  TORCH_CHECK_VALUE(p.top_p >= kMinFloat, op, ": top_p", where, " must be at least ",
                    kMinFloat, " (the smallest float32), got ", p.top_p);
  TORCH_CHECK_VALUE(p.min_p >= 0.0 && p.min_p < 1.0, op, ": min_p", where,
                    " must be in [0, 1) (0 = off), got ", p.min_p);
  TORCH_CHECK_VALUE(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0 &&
                        static_cast<float>(p.repetition_penalty) > 0.0f &&
                        p.repetition_penalty <= std::numeric_limits<float>::max(),
                    op, ": repetition_penalty", where,
                    " must be a finite float32 number > 0 (1 = off), got ",
                    p.repetition_penalty);
}

kernels::RowSamplingParams narrow(const RawParams& raw) {
  kernels::RowSamplingParams p;
  p.temperature = static_cast<float>(raw.temperature);
  p.top_k = static_cast<int64_t>(raw.top_k);
  p.top_p = static_cast<float>(raw.top_p);
  p.min_p = static_cast<float>(raw.min_p);
  p.repetition_penalty = static_cast<float>(raw.repetition_penalty);
  return p;
}

// The knobs of `rows` rows, every one range-checked: one set for every row, or the [B, 5]
// table row_params (B = rows; rows < 0 takes B from the table).
std::vector<kernels::RowSamplingParams> read_sampling_params(
    const char* op, int64_t rows, double temperature, std::optional<int64_t> top_k,
    double top_p, double min_p, double repetition_penalty,
    const std::optional<at::Tensor>& row_params) {
  if (row_params.has_value()) {
    const at::Tensor& t = *row_params;
    if (rows < 0 && t.dim() == 2) rows = t.size(0);
    TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && t.size(1) == kNumParams, op,
                      ": row_params must have shape [B, 5]", rows >= 0 ? " = [" : "",
                      rows >= 0 ? std::to_string(rows) + ", 5]" : std::string(), ", got ",
                      t.sizes());
    TORCH_CHECK_TYPE(t.is_floating_point() || t.scalar_type() == at::kLong ||
                         t.scalar_type() == at::kInt,
                     op, ": row_params must be a real tensor, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": row_params must be a CPU tensor");
    const at::Tensor tf = t.to(at::kDouble).contiguous();
    const double* v = tf.data_ptr<double>();
    std::vector<kernels::RowSamplingParams> params(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const double* c = v + r * kNumParams;
      const RawParams raw{c[kTemperature], c[kTopK], c[kTopP], c[kMinP],
                          c[kRepetitionPenalty]};
      check_row_params(op, r, raw);
      params[r] = narrow(raw);
    }
    return params;
  }
  const RawParams raw{temperature, static_cast<double>(top_k.value_or(0)), top_p, min_p,
                      repetition_penalty};
  check_row_params(op, -1, raw);
  return std::vector<kernels::RowSamplingParams>(std::max<int64_t>(rows, 1), narrow(raw));
}

}  // namespace

void check_sampling_params(double temperature, std::optional<int64_t> top_k, double top_p,
                           double min_p, double repetition_penalty,
                           const std::optional<at::Tensor>& row_params) {
  read_sampling_params("fastdecode::check_sampling_params", -1, temperature, top_k, top_p,
                       min_p, repetition_penalty, row_params);
}

at::Tensor logits_to_probs(const at::Tensor& logits, const std::optional<at::Tensor>& previous_tokens,
                           double temperature, std::optional<int64_t> top_k, double top_p,
                           double min_p, double repetition_penalty,
                           const std::optional<at::Tensor>& row_params) {
  constexpr const char* op = "fastdecode::logits_to_probs";
  check_sampling_input(op, "logits", logits);
  const int64_t rows = logits.dim() == 2 ? logits.size(0) : 1;
  const int64_t vocab = logits.size(-1);
  // Parameters: one set for every row, or a [B, 5] table. All checked before any work.
  const std::vector<kernels::RowSamplingParams> params = read_sampling_params(
      op, rows, temperature, top_k, top_p, min_p, repetition_penalty, row_params);

  // previous_tokens: [T] (shared by every row) or [B, T]; ids in [0, V).
  at::Tensor prev;
  int64_t n_prev = 0;
  bool prev_per_row = false;
  if (previous_tokens.has_value() && previous_tokens->numel() > 0) {
    const at::Tensor& t = *previous_tokens;
    TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": previous_tokens must be a CPU tensor");
    TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), op,
                     ": previous_tokens must hold integer token ids, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.dim() == 1 || (t.dim() == 2 && logits.dim() == 2 && t.size(0) == rows),
                      op, ": previous_tokens must have shape [T] or [B, T] with B = ", rows,
                      " rows of logits, got ", t.sizes());
    prev = t.to(at::kLong).contiguous();
    const int64_t lo = prev.min().item<int64_t>();
    const int64_t hi = prev.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < vocab, op, ": previous_tokens ids must be in [0, ", vocab,
                      ") (the vocabulary of logits), got ids in [", lo, ", ", hi, "]");
    prev_per_row = t.dim() == 2;
    n_prev = prev.size(-1);
  }

  const at::Tensor x = as_rows_f32(logits);
  at::Tensor probs = at::empty({rows, vocab}, x.options());
  const float* xp = x.data_ptr<float>();
  float* pp = probs.data_ptr<float>();
  const int64_t* prevp = n_prev > 0 ? prev.data_ptr<int64_t>() : nullptr;
  std::vector<kernels::RowStatus> status(rows, kernels::RowStatus::kOk);
  parallel_for(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    kernels::SamplingScratch scratch;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t* row_prev = prevp == nullptr ? nullptr : prevp + (prev_per_row ? r * n_prev : 0);
      status[r] = kernels::logits_to_probs_row(xp + r * vocab, pp + r * vocab, vocab, row_prev,
                                               n_prev, params[r], scratch);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK_VALUE(status[r] != kernels::RowStatus::kNaN, op, ": logits row ", r,
                      " contains NaN");
    TORCH_CHECK_VALUE(status[r] != kernels::RowStatus::kNoFiniteMax, op, ": logits row ", r,
                      " has no finite maximum (all -inf, or +inf present)");
  }
  return probs.view(logits.sizes()).to(logits.scalar_type());
}

at::Tensor multinomial_sample_one_no_sync(const at::Tensor& probs,
                                          std::optional<at::Generator> generator,
                                          const std::optional<at::Tensor>& noise) {
  constexpr const char* op = "fastdecode::multinomial_sample_one_no_sync";
  check_sampling_input(op, "probs", probs);
  const at::Tensor p = as_rows_f32(probs);
  const int64_t rows = p.size(0);
  const int64_t vocab = p.size(1);
  at::Tensor noise_rows;
  if (noise.has_value()) {
    TORCH_CHECK_VALUE(noise->sizes() == probs.sizes(), op,
                      ": noise must have the shape of probs ", probs.sizes(), ", got ",
                      noise->sizes());
    TORCH_CHECK_TYPE(noise->is_floating_point(), op, ": noise must be a floating tensor, got ",
                     noise->scalar_type());
    TORCH_CHECK_VALUE(noise->device().is_cpu(), op, ": noise must be a CPU tensor");
    noise_rows = as_rows_f32(*noise);
  }
  uint64_t key = 0;
  if (!noise.has_value()) {
    // One 64-bit draw advances the caller's generator; each row's uniform comes from it
    // through a counter-based hash (rows independent, in any order).
    auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
        generator, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(gen->mutex_);
    key = gen->random64();
  }
  at::Tensor out = at::empty({rows, 1}, p.options().dtype(at::kInt));
  const float* pp = p.data_ptr<float>();
  const float* np = noise.has_value() ? noise_rows.data_ptr<float>() : nullptr;
  int32_t* outp = out.data_ptr<int32_t>();
  std::vector<kernels::ProbsStatus> status(rows, kernels::ProbsStatus::kOk);
  parallel_for(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      status[r] = kernels::check_probs_row(pp + r * vocab, vocab);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK_VALUE(status[r] != kernels::ProbsStatus::kNotFinite, op, ": probs row ", r,
                      " holds NaN or infinity");
    TORCH_CHECK_VALUE(status[r] != kernels::ProbsStatus::kNegative, op, ": probs row ", r,
                      " holds a negative value");
    TORCH_CHECK_VALUE(status[r] != kernels::ProbsStatus::kNoMass, op, ": probs row ", r,
                      " has no positive entry: nothing to draw");
  }
  if (noise.has_value()) {
    TORCH_CHECK_VALUE(noise_rows.numel() == 0 || (noise_rows.min().item<float>() > 0.0f &&
                                                  at::isfinite(noise_rows).all().item<bool>()),
                      op, ": noise must be finite and > 0 (Exp(1) draws)");
  }
  parallel_for(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    std::unique_ptr<float[]> ratios(np != nullptr ? new float[vocab] : nullptr);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t idx =
          np != nullptr
              ? kernels::exponential_race_argmax(pp + r * vocab, np + r * vocab, vocab,
                                                 ratios.get())
              : kernels::inverse_cdf_sample(
                    pp + r * vocab, vocab,
                    kernels::counter_uniform(key, static_cast<uint32_t>(r), 0));
      outp[r] = static_cast<int32_t>(idx);
    }
  });
  // [V] -> [1], [B, V] -> [B, 1]: argmax(..., dim=-1, keepdim=True) as in the reference.
  auto shape = probs.sizes().vec();
  shape.back() = 1;
  return out.view(shape);
}

void first_max_rows(const float* x, int64_t rows, int64_t n, int32_t* index, char* has_nan) {
  parallel_for(rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const kernels::RowMax m = kernels::row_max(x + r * n, n);
      has_nan[r] = m.has_nan;
      index[r] = static_cast<int32_t>(m.index);
    }
  });
}

at::Tensor argmax_token(const at::Tensor& scores) {
  constexpr const char* op = "fastdecode::argmax_token";
  check_sampling_input(op, "scores", scores);
  const at::Tensor x = as_rows_f32(scores);
  const int64_t rows = x.size(0), vocab = x.size(1);
  at::Tensor out = at::empty({rows, 1}, x.options().dtype(at::kInt));
  std::vector<char> nan_rows(rows, 0);
  first_max_rows(x.data_ptr<float>(), rows, vocab, out.data_ptr<int32_t>(), nan_rows.data());
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK_VALUE(!nan_rows[r], op, ": scores row ", r, " contains NaN");
  }
  auto shape = scores.sizes().vec();
  shape.back() = 1;
  return out.view(shape);
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("argmax_token", &argmax_token);
  m.impl("logits_to_probs", &logits_to_probs);
  m.impl("multinomial_sample_one_no_sync", &multinomial_sample_one_no_sync);
}

// The knob check reads no tensor but the optional table: one kernel for every backend.
TORCH_LIBRARY_IMPL(fastdecode, CompositeExplicitAutograd, m) {
  m.impl("check_sampling_params", &check_sampling_params);
}

}  // namespace fastdecode::cpu
