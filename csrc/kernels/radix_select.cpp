// Thresholds for top-k (on logits) and top-p (on probabilities) without sorting the row.
//
// Two steps, both linear:
//  1. bands: one vectorised pass counts (top-k) or sums (top-p) the entries above 8 fixed
//     cut-offs below the maximum; the first cut-off that already holds k entries (or top_p of
//     the mass) is a lower bound on the threshold. Usually it leaves a few hundred entries.
//  2. radix select over the entries above that bound only (whole 16-entry chunks below it are
//     skipped): histograms of order-preserving keys, 11 + 11 + 10 bits, each over the
//     members of the bucket the previous level chose; the last level fixes all 32 bits.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

namespace {

constexpr int kBands = 8;

// Order-preserving map float -> uint32 (for NaN-free input): flips the sign bit of
// positives and every bit of negatives, so -inf < ... < -0 < +0 < ... < +inf as integers.
inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Per band b: sum over entries with x >= cut[b] of (count ? 1 : x). cut is descending.
FASTDECODE_KERNEL_BODY
void band_totals_body(const float* x, int64_t n, const float* cut, bool count, double* total) {
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
    for (int b = 0; b < kBands; ++b) acc[b] += select16(v >= cuts[b], w, zero);
  }
  for (int b = 0; b < kBands; ++b) {
    double t = 0.0;
    for (int l = 0; l < kLanes; ++l) t += acc[b][l];
    for (int64_t i = full; i < n; ++i) t += x[i] >= cut[b] ? (count ? 1.0 : x[i]) : 0.0;
    total[b] = t;
  }
}
FASTDECODE_DISPATCH(void, band_totals,
                    (const float* x, int64_t n, const float* cut, bool count, double* total),
                    (x, n, cut, count, total))

// The first cut-off whose band total reaches `target`, or -inf when none does.
float band_lower_bound(const float* x, int64_t n, const float* cut, bool count, double target) {
  double total[kBands];
  band_totals(x, n, cut, count, total);
  for (int b = 0; b < kBands; ++b) {
    if (total[b] >= target) return cut[b];
  }
  return -std::numeric_limits<float>::infinity();
}

// Inverse of order_key.
inline float key_value(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Grows a scratch buffer without clearing it (its contents are always written before read).
inline uint32_t* at_least(std::vector<uint32_t>& buffer, int64_t n) {
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// The keys of the entries with x >= lower, in index order, into out[0:count); returns count.
// 16-entry chunks entirely below `lower` are skipped after one vector compare; inside a
// chunk every key is written and the count advanced by the comparison (no branch).
FASTDECODE_KERNEL_BODY
int64_t collect_at_least_body(const float* x, int64_t n, float lower, uint32_t* out) {
  int64_t count = 0;
  const vf16 lo = splat16(lower);
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    if (!any16(load16(x + i) >= lo)) continue;
    for (int l = 0; l < kLanes; ++l) {
      out[count] = order_key(x[i + l]);
      count += x[i + l] >= lower;
    }
  }
  for (int64_t i = full; i < n; ++i) {
    out[count] = order_key(x[i]);
    count += x[i] >= lower;
  }
  return count;
}
FASTDECODE_DISPATCH(int64_t, collect_at_least,
                    (const float* x, int64_t n, float lower, uint32_t* out), (x, n, lower, out))

// The largest value v among the keys such that the weights (1 each with kCount, else the
// value itself) of the entries >= v add up to at least `target`; false when all of them add
// up to less (rounding in a top-p mass). Three radix levels of 11, 11 and 10 key bits: each
// histogram runs over the keys that share the prefix chosen so far, so the work stays linear
// however many entries tie in their leading bits (a flat row puts tens of thousands of
// probabilities into one 11-bit bucket).
template <bool kCount>
bool radix_select_desc(const uint32_t* keys, int64_t count, double target, SamplingScratch& s,
                       float* out) {
  constexpr int kShifts[3] = {21, 10, 0};
  constexpr int kWidths[3] = {11, 11, 10};
  double above = 0.0;
  uint32_t prefix = 0;
  for (int level = 0; level < 3; ++level) {
    const int shift = kShifts[level];
    const uint32_t buckets = 1u << kWidths[level], mask = buckets - 1;
    // four interleaved histograms: neighbours often share a bucket, and one histogram would
    // chain every add through the store of the previous one
    s.weights.assign(4 * buckets, 0.0);
    double* hist = s.weights.data();
    const int64_t quads = count - count % 4;
    for (int64_t i = 0; i < quads; i += 4) {
      for (int j = 0; j < 4; ++j) {
        hist[j * buckets + ((keys[i + j] >> shift) & mask)] +=
            kCount ? 1.0 : key_value(keys[i + j]);
      }
    }
    for (int64_t i = quads; i < count; ++i) {
      hist[(keys[i] >> shift) & mask] += kCount ? 1.0 : key_value(keys[i]);
    }
    for (uint32_t b = 0; b < buckets; ++b) {
      hist[b] += hist[buckets + b] + hist[2 * buckets + b] + hist[3 * buckets + b];
    }
    int64_t b = buckets - 1, lowest_seen = -1;
    for (; b >= 0; --b) {
      if (hist[b] == 0.0) continue;
      if (above + hist[b] >= target) break;
      above += hist[b];
      lowest_seen = b;
    }
    if (b < 0) {
      if (level == 0 || lowest_seen < 0) return false;
      b = lowest_seen;  // rounding inside a bucket: its smallest members close the set
      above -= hist[b];
    }
    prefix |= static_cast<uint32_t>(b) << shift;
    // the next level splits the chosen bucket only: compact its keys (in place is safe, the
    // write index never passes the read index)
    const uint32_t keep = ~((1u << shift) - 1u);
    uint32_t* members = at_least(s.bucket, count);
    int64_t kept = 0;
    for (int64_t i = 0; i < count; ++i) {
      members[kept] = keys[i];
      kept += (keys[i] & keep) == prefix;
    }
    keys = members;
    count = kept;
  }
  *out = key_value(prefix);  // every remaining key equals the full prefix
  return true;
}

}  // namespace

float kth_largest(const float* x, int64_t n, int64_t k, float max, SamplingScratch& s) {
  // Logit cut-offs below the max; wide enough to cover sharp and flat rows alike.
  const float cut[kBands] = {max - 1.0f,  max - 2.0f,  max - 4.0f,  max - 8.0f,
                             max - 16.0f, max - 32.0f, max - 64.0f, max - 1024.0f};
  const float lower = band_lower_bound(x, n, cut, /*count=*/true, static_cast<double>(k));
  const int64_t count = collect_at_least(x, n, lower, at_least(s.candidates, n));
  float value = max;
  radix_select_desc<true>(s.candidates.data(), count, static_cast<double>(k), s, &value);
  return value;
}

float top_p_threshold(const float* probs, int64_t n, float top_p, float max_prob,
                      SamplingScratch& s) {
  const float cut[kBands] = {max_prob * 0.5f,      max_prob * 0.125f,   max_prob * 0.03125f,
                             max_prob * 7.8125e-3f, max_prob * 1.953125e-3f,
                             max_prob * 2.44140625e-4f, max_prob * 1.52587890625e-5f, 0.0f};
  // The band sums are fp32: ask for a little more than top_p so that rounding can only make
  // the bound looser (a lower bound that is too low costs time, one too high a wrong answer).
  const float lower = band_lower_bound(probs, n, cut, /*count=*/false, top_p + 1e-4);
  const int64_t count = collect_at_least(probs, n, lower, at_least(s.candidates, n));
  float value = 0.0f;
  if (!radix_select_desc<false>(s.candidates.data(), count, top_p, s, &value)) {
    return 0.0f;  // rounding: the whole row is the nucleus
  }
  return value;
}

}  // namespace fastdecode::kernels
