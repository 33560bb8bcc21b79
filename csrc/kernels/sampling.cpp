#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/fast_exp.h"
#include "kernels/random.h"
#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

// One pass: per lane the best value and the 16-wide chunk where it was first seen (strict
// '>' keeps the first occurrence), then the lanes are merged by (value, index).
FASTDECODE_KERNEL_BODY
RowMax row_max_body(const float* x, int64_t n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  vf16 best = splat16(neg_inf);
  vi16 best_chunk = splat16i(0);
  vi16 nan_seen = splat16i(0);
  vi16 chunk = splat16i(0);  // kept in a register: a splat inside the loop is lane by lane
  const vi16 one = splat16i(1);
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    const vf16 v = load16(x + i);
    nan_seen |= v != v;
    const vi16 better = v > best;
    best = select16(better, v, best);
    best_chunk = select16(better, chunk, best_chunk);
    chunk += one;
  }
  RowMax out{neg_inf, 0, any16(nan_seen)};
  bool found = false;
  for (int l = 0; l < kLanes; ++l) {
    const int64_t idx = static_cast<int64_t>(best_chunk[l]) * kLanes + l;
    if (best[l] > out.value || (best[l] == out.value && found && idx < out.index) ||
        (!found && best[l] == out.value && best[l] > neg_inf)) {
      out.value = best[l];
      out.index = idx;
      found = true;
    }
  }
  for (int64_t i = full; i < n; ++i) {
    out.has_nan = out.has_nan || x[i] != x[i];
    if (x[i] > out.value) {  // tail indices are larger: only a strictly larger value wins
      out.value = x[i];
      out.index = i;
      found = true;
    }
  }
  if (!found) out.index = 0;  // every entry -inf (or NaN): index 0, as torch.argmax
  return out;
}
FASTDECODE_DISPATCH(RowMax, row_max, (const float* x, int64_t n), (x, n))

FASTDECODE_KERNEL_BODY
void softmax_row_body(const float* x, float* probs, int64_t n, float max, float inv_temperature,
                      float threshold) {
  float acc[kLanes] = {};
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l];
      const float e = fast_expf((v - max) * inv_temperature);
      const float p = v >= threshold ? e : 0.0f;
      probs[i + l] = p;
      acc[l] += p;
    }
  }
  for (int64_t i = full; i < n; ++i) {
    const float v = x[i];
    const float p = v >= threshold ? fast_expf((v - max) * inv_temperature) : 0.0f;
    probs[i] = p;
    acc[0] += p;
  }
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  const float inv_sum = 1.0f / sum;  // sum >= exp(0) = 1 because the max entry is kept
  for (int64_t i = 0; i < n; ++i) probs[i] *= inv_sum;
}
FASTDECODE_DISPATCH(void, softmax_row,
                    (const float* x, float* probs, int64_t n, float max, float inv_temperature,
                     float threshold),
                    (x, probs, n, max, inv_temperature, threshold))

FASTDECODE_KERNEL_BODY
void mask_below_and_renormalise_body(float* probs, int64_t n, float threshold) {
  float acc[kLanes] = {};
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float p = probs[i + l] >= threshold ? probs[i + l] : 0.0f;
      probs[i + l] = p;
      acc[l] += p;
    }
  }
  for (int64_t i = full; i < n; ++i) {
    const float p = probs[i] >= threshold ? probs[i] : 0.0f;
    probs[i] = p;
    acc[0] += p;
  }
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  const float inv_sum = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) probs[i] *= inv_sum;
}
FASTDECODE_DISPATCH(void, mask_below_and_renormalise, (float* probs, int64_t n, float threshold),
                    (probs, n, threshold))

RowStatus logits_to_probs_row(const float* logits, float* probs, int64_t n, const int64_t* prev,
                              int64_t n_prev, const RowSamplingParams& params,
                              SamplingScratch& s) {
  const float* x = logits;
  if (n_prev > 0 && params.repetition_penalty != 1.0f) {
    // New values are computed from the untouched row first, then written: a token listed
    // several times is penalised once.
    s.penalties.resize(n_prev);
    for (int64_t j = 0; j < n_prev; ++j) {
      const float v = logits[prev[j]];
      s.penalties[j] = v > 0.0f ? v / params.repetition_penalty : v * params.repetition_penalty;
    }
    s.penalised.assign(logits, logits + n);
    for (int64_t j = 0; j < n_prev; ++j) s.penalised[prev[j]] = s.penalties[j];
    x = s.penalised.data();
  }
  const RowMax m = row_max(x, n);
  if (m.has_nan) return RowStatus::kNaN;
  if (!std::isfinite(m.value)) return RowStatus::kNoFiniteMax;
  if (params.temperature == 0.0f) {
    one_hot_row(probs, n, m.index);
    return RowStatus::kOk;
  }
  // Temperature is positive, so top-k on tempered logits = top-k on the logits.
  float logit_threshold = -std::numeric_limits<float>::infinity();
  if (params.top_k > 0 && params.top_k < n) {
    logit_threshold = kth_largest(x, n, params.top_k, m.value, s);
  }
  softmax_row(x, probs, n, m.value, 1.0f / params.temperature, logit_threshold);
  float threshold = 0.0f;
  if (params.top_p < 1.0f) {
    threshold = top_p_threshold(probs, n, params.top_p, probs[m.index], s);
  }
  if (params.min_p > 0.0f) threshold = std::max(threshold, params.min_p * probs[m.index]);
  if (threshold > 0.0f) mask_below_and_renormalise(probs, n, threshold);
  return RowStatus::kOk;
}

void one_hot_row(float* probs, int64_t n, int64_t index) {
  std::fill(probs, probs + n, 0.0f);
  probs[index] = 1.0f;
}

// Both races: ratios[i] = probs[i] / E_i in one elementwise pass, then the first index of
// the largest ratio (row_max). NaN ratios never win.
namespace {
int64_t argmax_of_ratios(const float* ratios, int64_t n) {
  const RowMax m = row_max(ratios, n);
  return m.value > 0.0f ? m.index : 0;  // no positive weight: 0
}
}  // namespace

FASTDECODE_KERNEL_BODY
ProbsStatus check_probs_row_body(const float* probs, int64_t n) {
  // one pass of lane-wise flags (the loop vectorises: no early exit)
  int not_finite = 0, negative = 0, positive = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float p = probs[i];
    not_finite |= !(p - p == 0.0f);  // NaN and +-inf give NaN here
    negative |= p < 0.0f;
    positive |= p > 0.0f;
  }
  if (not_finite) return ProbsStatus::kNotFinite;
  if (negative) return ProbsStatus::kNegative;
  return positive ? ProbsStatus::kOk : ProbsStatus::kNoMass;
}
FASTDECODE_DISPATCH(ProbsStatus, check_probs_row, (const float* probs, int64_t n), (probs, n))

FASTDECODE_KERNEL_BODY
int64_t exponential_race_argmax_body(const float* probs, const float* noise, int64_t n,
                                     float* ratios) {
  for (int64_t i = 0; i < n; ++i) ratios[i] = probs[i] / noise[i];
  return argmax_of_ratios(ratios, n);
}
FASTDECODE_DISPATCH(int64_t, exponential_race_argmax,
                    (const float* probs, const float* noise, int64_t n, float* ratios),
                    (probs, noise, n, ratios))

FASTDECODE_KERNEL_BODY
double row_sum_body(const float* probs, int64_t n) {
  float acc[kLanes] = {};
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += probs[i + l];
  }
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += acc[l];
  for (int64_t i = full; i < n; ++i) total += probs[i];
  return total;
}
FASTDECODE_DISPATCH(double, row_sum, (const float* probs, int64_t n), (probs, n))

int64_t inverse_cdf_sample(const float* probs, int64_t n, double u) {
  // target in [0, total): the first index whose running sum passes it has probs > 0 (a zero
  // entry leaves the sum where it was). Blocks of 256 are skipped on their sum; inside the
  // block that passes, entries are added one by one.
  const double target = u * row_sum(probs, n);
  constexpr int64_t kBlock = 256;
  double running = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    const double block = row_sum(probs + start, len);
    if (running + block <= target) {
      running += block;
      continue;
    }
    for (int64_t i = start; i < start + len; ++i) {
      if (probs[i] <= 0.0f) continue;
      running += probs[i];
      if (running > target) return i;
    }
  }
  // rounding put the target at or past the last running sum: the last positive entry
  for (int64_t i = n - 1; i >= 0; --i) {
    if (probs[i] > 0.0f) return i;
  }
  return 0;
}

}  // namespace fastdecode::kernels
