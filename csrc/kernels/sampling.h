// Torch-free sampling kernels on one row of a [B, V] fp32 array. Each function works on a
// single row so the caller can run rows in parallel. No sort of the vocabulary anywhere:
// top-k and top-p thresholds come from radix selection (one histogram pass, then a small
// selection inside the one bucket that holds the threshold).
#pragma once

#include <cstdint>
#include <vector>

namespace fastdecode::kernels {

struct RowMax {
  float value;      // largest non-NaN entry (-inf when every entry is -inf)
  int64_t index;    // first index holding `value` (torch.argmax's tie rule)
  bool has_nan;     // any NaN in the row: callers reject the input
};

// Max, first argmax and NaN flag of x[0:n) in one vectorised pass.
RowMax row_max(const float* x, int64_t n);

// Reusable buffers for one thread (sized on first use, kept across rows).
struct SamplingScratch {
  std::vector<float> penalised;   // the row after the repetition penalty
  std::vector<uint32_t> candidates;  // order keys of the entries above a threshold's bound
  std::vector<uint32_t> bucket;      // keys in the radix bucket that holds the threshold
  std::vector<float> penalties;   // new logits of previous tokens
  std::vector<double> weights;    // radix histogram: counts (top-k) or mass (top-p)
};

// The k-th largest value of x[0:n) (k in [1, n]), NaN-free input, `max` = its maximum.
// Band counts bound it from below, then radix select (radix_select.cpp) finds it exactly.
float kth_largest(const float* x, int64_t n, int64_t k, float max, SamplingScratch& scratch);

// Smallest probability tau such that the tokens with p >= tau hold at least `top_p` of the
// mass (the nucleus: highest-probability tokens first, the token that crosses top_p
// included, ties with it included). probs are normalised and non-negative; top_p in (0, 1).
// max_prob = max(probs). Returns 0 when rounding keeps the running sum below top_p (keep
// everything).
float top_p_threshold(const float* probs, int64_t n, float top_p, float max_prob,
                      SamplingScratch& scratch);

// probs[i] = exp((x[i] - max) * inv_temperature) / Z for x[i] >= threshold, else 0, where Z
// normalises the kept entries. `max` is row_max(x).value and must be >= threshold (so at
// least one entry is kept); pass -inf as threshold to keep every entry.
void softmax_row(const float* x, float* probs, int64_t n, float max, float inv_temperature,
                 float threshold);

// probs[i] = 0 where probs[i] < threshold, then renormalise (threshold <= max(probs)).
void mask_below_and_renormalise(float* probs, int64_t n, float threshold);

// probs = one-hot at `index` (greedy decoding expressed as a distribution).
void one_hot_row(float* probs, int64_t n, int64_t index);

struct RowSamplingParams {
  float temperature = 1.0f;         // >= 0; 0 = greedy (one-hot at the argmax)
  int64_t top_k = 0;                // 0 = off; >= n keeps everything
  float top_p = 1.0f;               // (0, 1]; 1 = off
  float min_p = 0.0f;               // [0, 1); keep p >= min_p * max p; 0 = off
  float repetition_penalty = 1.0f;  // > 0; 1 = off
};

enum class RowStatus : uint8_t { kOk = 0, kNaN = 1, kNoFiniteMax = 2 };

// The whole logits -> probabilities pipeline for one row, in this order:
//   1. repetition penalty on the distinct ids in prev[0:n_prev) (each id once, whatever its
//      multiplicity): logit / penalty if the logit is > 0, logit * penalty otherwise;
//   2. temperature (0 -> one-hot at the first argmax, the remaining steps skipped);
//   3. top-k on the tempered logits (ties with the k-th value kept);
//   4. softmax over the kept tokens;
//   5. top-p (nucleus) and min-p on those probabilities; one renormalisation.
// `logits` is not modified. prev ids must be in [0, n).
RowStatus logits_to_probs_row(const float* logits, float* probs, int64_t n, const int64_t* prev,
                              int64_t n_prev, const RowSamplingParams& params,
                              SamplingScratch& scratch);

// Whether probs[0:n) is a distribution the race can draw from: every entry finite and
// >= 0, at least one > 0 (checked by the caller before a draw: a NaN, negative or all-zero
// row would otherwise give an index of probability 0).
enum class ProbsStatus : uint8_t { kOk = 0, kNotFinite = 1, kNegative = 2, kNoMass = 3 };
ProbsStatus check_probs_row(const float* probs, int64_t n);

// argmax_i probs[i] / noise[i], first index on ties; with noise ~ Exp(1) this draws i with
// probability probs[i] / sum(probs) (the "exponential race"), without a cumulative sum or a
// host sync. NaN ratios never win; returns 0 when no ratio is > 0. `ratios` holds n floats.
int64_t exponential_race_argmax(const float* probs, const float* noise, int64_t n,
                                float* ratios);

// Sum of probs[0:n) (lane-wise fp32 partial sums, added in double).
double row_sum(const float* probs, int64_t n);

// One draw from probs (non-negative with a positive sum, need not be normalised): the
// smallest index j with probs[0] + ... + probs[j] > u * sum(probs) (row_sum's lane partial
// sums, running sums in double), u uniform in [0, 1), so index i with probability
// probs[i] / sum(probs), never one with
// probs[i] == 0. One uniform per row instead of one Exp(1) draw per token (the race above):
// about two passes over the row. Also the speculative kernels' draw.
int64_t inverse_cdf_sample(const float* probs, int64_t n, double u);

}  // namespace fastdecode::kernels
