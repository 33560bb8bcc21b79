#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/fast_exp.h"
#include "kernels/simd.h"

namespace fastdecode::kernels {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Merge per-lane (value, index) winners: larger value wins, smaller index breaks ties.
inline void merge_lanes(const float* best, const int64_t* best_i, float& value, int64_t& index) {
  value = best[0];
  index = best_i[0];
  for (int l = 1; l < kLanes; ++l) {
    if (best[l] > value || (best[l] == value && best_i[l] < index)) {
      value = best[l];
      index = best_i[l];
    }
  }
}
}  // namespace

FASTDECODE_MULTIVERSION
RowMax row_max(const float* x, int64_t n) {
  float best[kLanes];
  int64_t best_i[kLanes];
  int nan_seen[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    best[l] = kNegInf;
    best_i[l] = l < n ? l : 0;
    nan_seen[l] = 0;
  }
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l];
      nan_seen[l] |= (v != v);
      const bool better = v > best[l];  // strict: keeps the first index within a lane
      best[l] = better ? v : best[l];
      best_i[l] = better ? i + l : best_i[l];
    }
  }
  for (int64_t i = full; i < n; ++i) {
    const int l = static_cast<int>(i - full);
    const float v = x[i];
    nan_seen[l] |= (v != v);
    if (v > best[l]) {
      best[l] = v;
      best_i[l] = i;
    }
  }
  RowMax out{};
  merge_lanes(best, best_i, out.value, out.index);
  out.has_nan = false;
  for (int l = 0; l < kLanes; ++l) out.has_nan = out.has_nan || nan_seen[l];
  return out;
}

float kth_largest(const float* x, int64_t n, int64_t k, float* scratch) {
  std::copy(x, x + n, scratch);
  // After nth_element with greater<>, scratch[k-1] is the value a descending sort would put
  // there; NaN-free input is a precondition (row_max reports NaN first).
  std::nth_element(scratch, scratch + (k - 1), scratch + n, std::greater<float>());
  return scratch[k - 1];
}

FASTDECODE_MULTIVERSION
void softmax_row(const float* x, float* probs, int64_t n, float max, float inv_temperature,
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

void one_hot_row(float* probs, int64_t n, int64_t index) {
  std::fill(probs, probs + n, 0.0f);
  probs[index] = 1.0f;
}

FASTDECODE_MULTIVERSION
int64_t exponential_race_argmax(const float* probs, const float* noise, int64_t n) {
  float best[kLanes];
  int64_t best_i[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    best[l] = kNegInf;
    best_i[l] = std::numeric_limits<int64_t>::max();
  }
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float r = probs[i + l] / noise[i + l];
      const bool better = r > best[l];
      best[l] = better ? r : best[l];
      best_i[l] = better ? i + l : best_i[l];
    }
  }
  for (int64_t i = full; i < n; ++i) {
    const int l = static_cast<int>(i - full);
    const float r = probs[i] / noise[i];
    if (r > best[l]) {
      best[l] = r;
      best_i[l] = i;
    }
  }
  float value;
  int64_t index;
  merge_lanes(best, best_i, value, index);
  return index == std::numeric_limits<int64_t>::max() ? 0 : index;
}

}  // namespace fastdecode::kernels
