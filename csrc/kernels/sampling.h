// Torch-free sampling kernels on one row of a [B, V] fp32 array. Each function works on a
// single row so the caller can run rows in parallel; none allocates except kth_largest's
// caller-provided scratch.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

struct RowMax {
  float value;      // largest non-NaN entry (-inf when every entry is -inf)
  int64_t index;    // first index holding `value` (torch.argmax's tie rule)
  bool has_nan;     // any NaN in the row: callers reject the input
};

// One pass over x[0:n).
RowMax row_max(const float* x, int64_t n);

// The k-th largest value of x[0:n) (k in [1, n]) by selection (std::nth_element, O(n)
// average), not a sort. `scratch` holds n floats and is overwritten.
float kth_largest(const float* x, int64_t n, int64_t k, float* scratch);

// probs[i] = exp((x[i] - max) * inv_temperature) / Z for x[i] >= threshold, else 0, where Z
// normalises the kept entries. `max` is row_max(x).value and must be >= threshold (so at
// least one entry is kept); pass -inf as threshold to keep every entry.
void softmax_row(const float* x, float* probs, int64_t n, float max, float inv_temperature,
                 float threshold);

// probs = one-hot at `index` (greedy decoding expressed as a distribution).
void one_hot_row(float* probs, int64_t n, int64_t index);

// argmax_i probs[i] / noise[i], first index on ties; with noise ~ Exp(1) this draws i with
// probability probs[i] / sum(probs) (the "exponential race"), without a cumulative sum or a
// host sync. Entries whose ratio is NaN never win; returns 0 when no ratio is > -inf.
int64_t exponential_race_argmax(const float* probs, const float* noise, int64_t n);

}  // namespace fastdecode::kernels
