// csrc/kernels/sampling: row_max, kth_largest, softmax_row, exponential_race_argmax.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fast_exp.h"
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
  auto v = random_row(1000, 2);
  std::vector<float> sorted = v, scratch(v.size());
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  for (int64_t k : {1, 2, 10, 500, 1000}) {
    CHECK(kth_largest(v.data(), 1000, k, scratch.data()) == sorted[k - 1]);
  }
}

TEST_CASE("softmax_row normalises, masks below threshold and matches double math", "[softmax]") {
  for (int64_t n : {1, 3, 16, 31, 49152}) {
    auto v = random_row(n, 10 + static_cast<uint32_t>(n));
    std::vector<float> p(n), scratch(n);
    const RowMax m = row_max(v.data(), n);
    const float inv_t = 1.0f / 0.7f;
    const float threshold = n > 3 ? kth_largest(v.data(), n, 3, scratch.data()) : -kInf;
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
  CHECK(exponential_race_argmax(p.data(), noise.data(), 4) == 1);  // 0.4 > 0.25 > 0.1 > 0
  std::vector<float> tie_p(40, 1.0f), tie_n(40, 1.0f);
  CHECK(exponential_race_argmax(tie_p.data(), tie_n.data(), 40) == 0);
}

TEST_CASE("exponential_race_argmax draws from the distribution", "[race][statistics]") {
  // 4 categories, 100k draws: every frequency within 5 standard deviations of its target.
  const std::vector<float> p = {0.1f, 0.2f, 0.3f, 0.4f};
  std::mt19937 rng(42);
  std::exponential_distribution<float> exp1(1.0f);
  std::vector<int> counts(4, 0);
  const int draws = 100000;
  std::vector<float> noise(4);
  for (int d = 0; d < draws; ++d) {
    for (auto& e : noise) e = exp1(rng);
    counts[exponential_race_argmax(p.data(), noise.data(), 4)]++;
  }
  for (int i = 0; i < 4; ++i) {
    const double sd = std::sqrt(draws * p[i] * (1 - p[i]));
    CHECK(std::fabs(counts[i] - draws * p[i]) < 5 * sd);
  }
}
