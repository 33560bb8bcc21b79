// fastdecode::speculative_accept on the CPU: checks (all before any work), the uniforms
// (given, or drawn from one 64-bit generator draw through the counter-based hash) and the
// row-parallel loop around csrc/kernels/speculative.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/parallel.h"
#include "kernels/random.h"
#include "kernels/speculative.h"

namespace fastdecode::cpu {
namespace {

void check_probs(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ",
                    t.device());
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op, ": ", name,
                   " must be float32, bfloat16 or float16, got ", dt);
  if (t.numel() == 0) return;
  TORCH_CHECK_VALUE(at::isfinite(t).all().item<bool>() && t.min().item<float>() >= 0.0f, op,
                    ": ", name, " must hold finite probabilities >= 0");
  // a row without mass has no token to give: the draw would land on a zero-probability one
  TORCH_CHECK_VALUE((t.to(at::kFloat).sum(-1) > 0).all().item<bool>(), op, ": every row of ",
                    name, " must have a positive sum (a distribution), one sums to 0");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> speculative_accept(
    const at::Tensor& draft_tokens, const at::Tensor& draft_probs, const at::Tensor& target_probs,
    std::optional<at::Generator> generator, const std::optional<at::Tensor>& uniforms) {
  constexpr const char* op = "fastdecode::speculative_accept";
  TORCH_CHECK_VALUE(draft_tokens.dim() == 2, op, ": draft_tokens must be [B, k], got ",
                    draft_tokens.sizes());
  TORCH_CHECK_TYPE(draft_tokens.scalar_type() == at::kLong ||
                       draft_tokens.scalar_type() == at::kInt,
                   op, ": draft_tokens must be int64 or int32, got ",
                   draft_tokens.scalar_type());
  const int64_t B = draft_tokens.size(0), k = draft_tokens.size(1);
  TORCH_CHECK_VALUE(target_probs.dim() == 3 && target_probs.size(0) == B &&
                        target_probs.size(1) == k + 1 && target_probs.size(2) > 0,
                    op, ": target_probs must be [B, k + 1, V] = [", B, ", ", k + 1,
              ", V] for draft_tokens [B, k] = [", B, ", ", k, "], got ", target_probs.sizes());
  const int64_t V = target_probs.size(2);
  TORCH_CHECK_VALUE(draft_probs.dim() == 3 && draft_probs.size(0) == B &&
                        draft_probs.size(1) == k,
                    op, ": draft_probs must be [B, k, V] = [", B, ", ", k, ", V], got ",
                    draft_probs.sizes());
  TORCH_CHECK_VALUE(draft_probs.size(2) == V, op, ": draft and target vocabularies differ: "
                    "draft_probs has V = ", draft_probs.size(2), ", target_probs has V = ", V);
  check_probs(op, "draft_probs", draft_probs);
  check_probs(op, "target_probs", target_probs);
  TORCH_CHECK_VALUE(draft_tokens.device().is_cpu(), op, ": draft_tokens must be a CPU tensor");
  const at::Tensor tokens_in = draft_tokens.to(at::kLong).contiguous();
  if (tokens_in.numel() > 0) {
    const int64_t lo = tokens_in.min().item<int64_t>(), hi = tokens_in.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < V, op, ": draft_tokens must be in [0, V) = [0, ", V,
                      "), got values in [", lo, ", ", hi, "]");
  }
  at::Tensor u;
  if (uniforms.has_value()) {
    TORCH_CHECK_VALUE(uniforms->dim() == 2 && uniforms->size(0) == B &&
                          uniforms->size(1) == k + 1,
                      op, ": uniforms must be [B, k + 1] = [", B, ", ", k + 1, "], got ",
                      uniforms->sizes());
    TORCH_CHECK_TYPE(uniforms->is_floating_point(), op,
                     ": uniforms must be a floating tensor, got ", uniforms->scalar_type());
    TORCH_CHECK_VALUE(uniforms->device().is_cpu(), op, ": uniforms must be a CPU tensor");
    u = uniforms->to(at::kDouble).contiguous();
    TORCH_CHECK_VALUE(B == 0 || (u.min().item<double>() >= 0.0 && u.max().item<double>() < 1.0), op,
                      ": uniforms must lie in [0, 1)");
  } else {
    auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
        generator, at::detail::getDefaultCPUGenerator());
    uint64_t key;
    {
      std::lock_guard<std::mutex> lock(gen->mutex_);
      key = gen->random64();
    }
    u = at::empty({B, k + 1}, target_probs.options().dtype(at::kDouble));
    double* up = u.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i <= k; ++i) {
        up[b * (k + 1) + i] =
            kernels::counter_uniform(key, static_cast<uint32_t>(b), static_cast<uint32_t>(i));
      }
    }
  }
  const at::Tensor p = draft_probs.to(at::kFloat).contiguous();
  const at::Tensor q = target_probs.to(at::kFloat).contiguous();
  at::Tensor tokens = at::empty({B, k + 1}, tokens_in.options());
  at::Tensor accepted = at::empty({B}, tokens_in.options());
  const int64_t* dp = tokens_in.data_ptr<int64_t>();
  const float* pp = p.data_ptr<float>();
  const float* qp = q.data_ptr<float>();
  const double* up = u.data_ptr<double>();
  int64_t* tp = tokens.data_ptr<int64_t>();
  int64_t* ap = accepted.data_ptr<int64_t>();
  parallel_for(B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      ap[b] = kernels::speculative_accept_row(dp + b * k, k, pp + b * k * V,
                                              qp + b * (k + 1) * V, V, up + b * (k + 1),
                                              tp + b * (k + 1));
    }
  });
  return {tokens, accepted};
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("speculative_accept", &speculative_accept); }

}  // namespace fastdecode::cpu
