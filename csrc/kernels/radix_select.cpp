// Thresholds for top-k (on logits) and top-p (on probabilities) without sorting the row.
//
// Two steps, both linear:
//  1. bands: one vectorised pass counts (top-k) or sums (top-p) the entries above 8 fixed
//     cut-offs below the maximum; the first cut-off that already holds k entries (or top_p of
//     the mass) is a lower bound on the threshold. Usually it leaves a few hundred entries.
//  2. radix select over the entries above that bound only (whole 16-entry chunks below it are
//     skipped): a 2048-bucket histogram of order-preserving keys, then an exact selection
//     inside the one bucket that holds the threshold.
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

namespace {

constexpr int kBucketShift = 21;  // 32 - 21 = 11 bits of key
constexpr int kBuckets = 1 << (32 - kBucketShift);
constexpr int kBands = 8;

// Order-preserving map float -> uint32 (for NaN-free input): flips the sign bit of
// positives and every bit of negatives, so -inf < ... < -0 < +0 < ... < +inf as integers.
inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline uint32_t bucket_of(float f) { return order_key(f) >> kBucketShift; }

// Per band b: sum over entries with x >= cut[b] of (count ? 1 : x). cut is descending.
FASTDECODE_MULTIVERSION
void band_totals(const float* x, int64_t n, const float* cut, bool count, double* total) {
  vf16 acc[kBands];
  vf16 cuts[kBands];
  for (int b = 0; b < kBands; ++b) {
    acc[b] = splat16(0.0f);
    cuts[b] = splat16(cut[b]);
  }
  const vf16 one = splat16(1.0f);
  const vf16 zero = splat16(0.0f);
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    const vf16 v = load16(x + i);
    const vf16 w = count ? one : v;
    for (int b = 0; b < kBands; ++b) acc[b] += v >= cuts[b] ? w : zero;
  }
  for (int b = 0; b < kBands; ++b) {
    double t = 0.0;
    for (int l = 0; l < kLanes; ++l) t += acc[b][l];
    for (int64_t i = full; i < n; ++i) t += x[i] >= cut[b] ? (count ? 1.0 : x[i]) : 0.0;
    total[b] = t;
  }
}

// The first cut-off whose band total reaches `target`, or -inf when none does.
float band_lower_bound(const float* x, int64_t n, const float* cut, bool count, double target) {
  double total[kBands];
  band_totals(x, n, cut, count, total);
  for (int b = 0; b < kBands; ++b) {
    if (total[b] >= target) return cut[b];
  }
  return -std::numeric_limits<float>::infinity();
}

// The entries with x >= lower, in index order; 16-entry chunks entirely below `lower` are
// skipped after one vector compare.
FASTDECODE_MULTIVERSION
void collect_at_least(const float* x, int64_t n, float lower, std::vector<float>& out) {
  out.clear();
  const vf16 lo = splat16(lower);
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    if (!any16(load16(x + i) >= lo)) continue;
    for (int l = 0; l < kLanes; ++l) {
      if (x[i + l] >= lower) out.push_back(x[i + l]);
    }
  }
  for (int64_t i = full; i < n; ++i) {
    if (x[i] >= lower) out.push_back(x[i]);
  }
}

}  // namespace

float kth_largest(const float* x, int64_t n, int64_t k, float max, SamplingScratch& s) {
  // Logit cut-offs below the max; wide enough to cover sharp and flat rows alike.
  const float cut[kBands] = {max - 1.0f,  max - 2.0f,  max - 4.0f,  max - 8.0f,
                             max - 16.0f, max - 32.0f, max - 64.0f, max - 1024.0f};
  const float lower = band_lower_bound(x, n, cut, /*count=*/true, static_cast<double>(k));
  collect_at_least(x, n, lower, s.candidates);
  s.counts.assign(kBuckets, 0);
  uint32_t* counts = s.counts.data();
  for (float v : s.candidates) counts[bucket_of(v)]++;
  // Walk buckets from the largest keys down to the one where the k-th largest lives.
  int64_t above = 0;
  int b = kBuckets - 1;
  for (; b > 0; --b) {
    if (above + counts[b] >= k) break;
    above += counts[b];
  }
  s.bucket.clear();
  for (float v : s.candidates) {
    if (bucket_of(v) == static_cast<uint32_t>(b)) s.bucket.push_back(v);
  }
  const int64_t rank = k - above;  // 1-based rank inside the bucket
  std::nth_element(s.bucket.begin(), s.bucket.begin() + (rank - 1), s.bucket.end(),
                   std::greater<float>());
  return s.bucket[rank - 1];
}

float top_p_threshold(const float* probs, int64_t n, float top_p, float max_prob,
                      SamplingScratch& s) {
  const float cut[kBands] = {max_prob * 0.5f,      max_prob * 0.125f,   max_prob * 0.03125f,
                             max_prob * 7.8125e-3f, max_prob * 1.953125e-3f,
                             max_prob * 2.44140625e-4f, max_prob * 1.52587890625e-5f, 0.0f};
  // The band sums are fp32: ask for a little more than top_p so that rounding can only make
  // the bound looser (a lower bound that is too low costs time, one too high a wrong answer).
  const float lower = band_lower_bound(probs, n, cut, /*count=*/false, top_p + 1e-4);
  collect_at_least(probs, n, lower, s.candidates);
  s.mass.assign(kBuckets, 0.0f);
  float* mass = s.mass.data();
  for (float v : s.candidates) mass[bucket_of(v)] += v;
  // Highest-probability buckets first, until the nucleus mass is reached.
  double above = 0.0;
  int b = kBuckets - 1;
  for (; b >= 0; --b) {
    if (above + mass[b] >= top_p) break;
    above += mass[b];
  }
  if (b < 0) return 0.0f;  // rounding: the whole row is the nucleus
  s.bucket.clear();
  for (float v : s.candidates) {
    if (bucket_of(v) == static_cast<uint32_t>(b)) s.bucket.push_back(v);
  }
  std::sort(s.bucket.begin(), s.bucket.end(), std::greater<float>());
  for (float v : s.bucket) {
    above += v;
    if (above >= top_p) return v;
  }
  return s.bucket.back();
}

}  // namespace fastdecode::kernels
