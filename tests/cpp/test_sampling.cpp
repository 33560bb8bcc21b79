// csrc/kernels/sampling: row_max, kth_largest, softmax_row, exponential_race_argmax.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fast_exp.h"
#include "kernels/random.h"
#include "kernels/sampling.h"

using namespace fastdecode::kernels;

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_row(int64_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}
}  // namespace

TEST_CASE("fast_expf is within 3 ulp of std::exp on the softmax range", "[exp]") {
  for (float x = -87.0f; x <= 0.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    REQUIRE(std::fabs(fast_expf(x) - want) <= 3 * 1.2e-7 * want);
  }
  CHECK(fast_expf(-kInf) == 0.0f);
  CHECK(fast_expf(-100.0f) == 0.0f);
  CHECK(fast_expf(0.0f) == 1.0f);
}

TEST_CASE("row_max finds the first maximum and flags NaN", "[row_max]") {
  for (int64_t n : {1, 5, 16, 17, 33, 1000, 49152}) {
    auto v = random_row(n, static_cast<uint32_t>(n));
    const auto it = std::max_element(v.begin(), v.end());
    const RowMax m = row_max(v.data(), n);
    CHECK(m.value == *it);
    CHECK(m.index == it - v.begin());
    CHECK_FALSE(m.has_nan);
  }
  std::vector<float> ties = {1, 7, 3, 7, 7, 0, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 7, 2};
  CHECK(row_max(ties.data(), ties.size()).index == 1);
  std::vector<float> all_neg_inf(20, -kInf);
  CHECK(row_max(all_neg_inf.data(), 20).index == 0);
  auto with_nan = random_row(40, 1);
  with_nan[37] = std::nanf("");
  CHECK(row_max(with_nan.data(), 40).has_nan);
}

TEST_CASE("kth_largest equals the k-th entry of a descending sort", "[topk]") {
  SamplingScratch scratch;
  for (int64_t n : {1, 2, 17, 1000, 49152}) {
    auto v = random_row(n, 2 + static_cast<uint32_t>(n));
    if (n > 5) {
      v[3] = -kInf;          // -inf and ties must be ordered like any value
      v[4] = v[0];
      v[5] = -0.0f;
    }
    std::vector<float> sorted = v;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (int64_t k : {int64_t{1}, int64_t{2}, n / 2 + 1, n - 1, n}) {
      if (k < 1 || k > n) continue;
      REQUIRE(kth_largest(v.data(), n, k, sorted[0], scratch) == sorted[k - 1]);
    }
  }
  std::vector<float> same(300, 0.25f);  // every value in one radix bucket
  CHECK(kth_largest(same.data(), 300, 123, 0.25f, scratch) == 0.25f);
  // a flat row (every band holds k entries at the first cut) and a very spread one
  std::vector<float> spread(1000);
  for (int i = 0; i < 1000; ++i) spread[i] = -100.0f * i;
  CHECK(kth_largest(spread.data(), 1000, 7, 0.0f, scratch) == -600.0f);
}

namespace {
// Nucleus threshold by sorting (the obvious way), in double.
float top_p_by_sort(const std::vector<float>& p, float top_p) {
  std::vector<float> s = p;
  std::sort(s.begin(), s.end(), std::greater<float>());
  double cum = 0;
  for (float v : s) {
    cum += v;
    if (cum >= top_p) return v;
  }
  return s.back();
}

std::vector<float> softmax_of(const std::vector<float>& x) {
  std::vector<float> p(x.size());
  const RowMax m = row_max(x.data(), x.size());
  softmax_row(x.data(), p.data(), x.size(), m.value, 1.0f, -kInf);
  return p;
}
}  // namespace

TEST_CASE("top_p_threshold equals the threshold found by sorting", "[topp]") {
  SamplingScratch scratch;
  for (int64_t n : {2, 10, 1000, 49152}) {
    const auto p = softmax_of(random_row(n, 40 + static_cast<uint32_t>(n), 2.0f));
    for (float top_p : {0.05f, 0.3f, 0.5f, 0.9f, 0.99f}) {
      const float pmax = *std::max_element(p.begin(), p.end());
      REQUIRE(top_p_threshold(p.data(), n, top_p, pmax, scratch) == top_p_by_sort(p, top_p));
    }
  }
  std::vector<float> uniform(64, 1.0f / 64);  // one bucket, all tied
  CHECK(top_p_threshold(uniform.data(), 64, 0.5f, 1.0f / 64, scratch) == 1.0f / 64);
}

TEST_CASE("mask_below_and_renormalise keeps p >= threshold", "[topp]") {
  std::vector<float> p = {0.1f, 0.4f, 0.2f, 0.3f};
  mask_below_and_renormalise(p.data(), 4, 0.2f);
  CHECK(p[0] == 0.0f);
  CHECK(p[1] == Approx(0.4 / 0.9));
  CHECK(p[2] == Approx(0.2 / 0.9));
  CHECK(p[3] == Approx(0.3 / 0.9));
}

TEST_CASE("logits_to_probs_row: penalty once per id, greedy, filters combine", "[pipeline]") {
  SamplingScratch scratch;
  const std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.0f, 1.5f};
  std::vector<float> probs(5);
  RowSamplingParams params;
  params.repetition_penalty = 2.0f;
  const std::vector<int64_t> prev = {0, 1, 0, 0};
  REQUIRE(logits_to_probs_row(logits.data(), probs.data(), 5, prev.data(), 4, params, scratch) ==
          RowStatus::kOk);
  // penalised logits {1, -4, 1, 0, 1.5}
  const double z = std::exp(1.0) * 2 + std::exp(-4.0) + 1 + std::exp(1.5);
  CHECK(probs[0] == Approx(std::exp(1.0) / z));
  CHECK(probs[4] == Approx(std::exp(1.5) / z));
  CHECK(logits[0] == 2.0f);  // input untouched

  params.temperature = 0.0f;  // greedy picks the penalised argmax (index 4)
  logits_to_probs_row(logits.data(), probs.data(), 5, prev.data(), 4, params, scratch);
  CHECK(probs == std::vector<float>{0, 0, 0, 0, 1});

  RowSamplingParams filt;
  filt.top_k = 3;   // keeps 2.0, 1.5, 1.0
  filt.min_p = 0.7f;  // keeps p >= 0.7 * p(2.0): exp(-0.5) = 0.61 < 0.7, so only 2.0 stays
  logits_to_probs_row(logits.data(), probs.data(), 5, nullptr, 0, filt, scratch);
  CHECK(probs == std::vector<float>{1, 0, 0, 0, 0});

  std::vector<float> bad = {0.0f, std::nanf("")};
  CHECK(logits_to_probs_row(bad.data(), probs.data(), 2, nullptr, 0, filt, scratch) ==
        RowStatus::kNaN);
}

TEST_CASE("softmax_row normalises, masks below threshold and matches double math", "[softmax]") {
  for (int64_t n : {1, 3, 16, 31, 49152}) {
    auto v = random_row(n, 10 + static_cast<uint32_t>(n));
    std::vector<float> p(n);
    SamplingScratch scratch;
    const RowMax m = row_max(v.data(), n);
    const float inv_t = 1.0f / 0.7f;
    const float threshold = n > 3 ? kth_largest(v.data(), n, 3, m.value, scratch) : -kInf;
    softmax_row(v.data(), p.data(), n, m.value, inv_t, threshold);
    double z = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (v[i] >= threshold) z += std::exp((static_cast<double>(v[i]) - m.value) * inv_t);
    }
    double total = 0;
    int kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want =
          v[i] >= threshold ? std::exp((static_cast<double>(v[i]) - m.value) * inv_t) / z : 0.0;
      REQUIRE(std::fabs(p[i] - want) <= 1e-6 * want + 1e-12);
      total += p[i];
      kept += p[i] > 0;
    }
    CHECK(total == Approx(1.0).epsilon(1e-6));
    CHECK(kept == (n > 3 ? 3 : n));
  }
}

TEST_CASE("one_hot_row", "[softmax]") {
  std::vector<float> p(9, 0.5f);
  one_hot_row(p.data(), 9, 4);
  for (int i = 0; i < 9; ++i) CHECK(p[i] == (i == 4 ? 1.0f : 0.0f));
}

TEST_CASE("exponential_race_argmax picks argmax(p / noise), first on ties", "[race]") {
  std::vector<float> p = {0.1f, 0.4f, 0.0f, 0.5f};
  std::vector<float> noise = {1.0f, 1.0f, 1e-9f, 2.0f};
  std::vector<float> ratios(40);
  CHECK(exponential_race_argmax(p.data(), noise.data(), 4, ratios.data()) == 1);  // 0.4 > 0.25 > 0.1 > 0
  std::vector<float> tie_p(40, 1.0f), tie_n(40, 1.0f);
  CHECK(exponential_race_argmax(tie_p.data(), tie_n.data(), 40, ratios.data()) == 0);
}

TEST_CASE("exponential_race_argmax draws from the distribution", "[race][statistics]") {
  // 4 categories, 100k draws: every frequency within 5 standard deviations of its target.
  const std::vector<float> p = {0.1f, 0.2f, 0.3f, 0.4f};
  std::mt19937 rng(42);
  std::exponential_distribution<float> exp1(1.0f);
  std::vector<int> counts(4, 0);
  const int draws = 100000;
  std::vector<float> noise(4), ratios(4);
  for (int d = 0; d < draws; ++d) {
    for (auto& e : noise) e = exp1(rng);
    counts[exponential_race_argmax(p.data(), noise.data(), 4, ratios.data())]++;
  }
  for (int i = 0; i < 4; ++i) {
    const double sd = std::sqrt(draws * p[i] * (1 - p[i]));
    CHECK(std::fabs(counts[i] - draws * p[i]) < 5 * sd);
  }
}

TEST_CASE("counter_uniform has the moments of U(0, 1)", "[random]") {
  const int n = 1 << 20;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = counter_uniform(0x1234abcdULL, 7, i);
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    sum2 += u * u;
  }
  CHECK(std::fabs(sum / n - 0.5) < 5 * std::sqrt(1.0 / 12 / n));
  CHECK(std::fabs(sum2 / n - 1.0 / 3) < 0.002);
}

TEST_CASE("inverse_cdf_sample inverts the cumulative sum, never off the support",
          "[inverse_cdf]") {
  // 600 entries (blocks of 256 are skipped on their sums): mass at 3, 300 and 599 only
  std::vector<float> p(600, 0.0f);
  p[3] = 1.0f;
  p[300] = 2.0f;
  p[599] = 1.0f;
  CHECK(inverse_cdf_sample(p.data(), p.size(), 0.0) == 3);
  CHECK(inverse_cdf_sample(p.data(), p.size(), 0.2499) == 3);
  CHECK(inverse_cdf_sample(p.data(), p.size(), 0.2501) == 300);
  CHECK(inverse_cdf_sample(p.data(), p.size(), 0.7499) == 300);
  CHECK(inverse_cdf_sample(p.data(), p.size(), 0.7501) == 599);
  CHECK(inverse_cdf_sample(p.data(), p.size(), 1.0) == 599);  // rounding past the end
  CHECK(row_sum(p.data(), p.size()) == 4.0);
}

TEST_CASE("inverse_cdf_sample with counter_uniform draws from the distribution",
          "[inverse_cdf][statistics]") {
  const std::vector<float> p = {0.1f, 0.0f, 0.2f, 0.3f, 0.4f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f,
                                0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.05f};
  std::vector<int> counts(p.size(), 0);
  const int draws = 100000;
  for (int d = 0; d < draws; ++d) {
    // a new key per draw, as a new generator draw per call does; rows share nothing
    const double u = counter_uniform(0x9e3779b97f4a7c15ULL * (d + 1), d % 3, 0);
    counts[inverse_cdf_sample(p.data(), p.size(), u)]++;
  }
  double total = 0;
  for (float v : p) total += v;
  for (size_t i = 0; i < p.size(); ++i) {
    const double q = p[i] / total;
    if (q == 0) {
      CHECK(counts[i] == 0);  // never outside the support
      continue;
    }
    CHECK(std::fabs(counts[i] - draws * q) < 5 * std::sqrt(draws * q * (1 - q)));
  }
}
