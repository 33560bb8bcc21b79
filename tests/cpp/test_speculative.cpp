// csrc/kernels/speculative: inverse-CDF draws, residual draws and the acceptance rule on
// hand-made distributions whose outcome is known.
#include <catch2/catch.hpp>

#include <vector>

#include "kernels/speculative.h"

using namespace fastdecode::kernels;

TEST_CASE("inverse_cdf_sample walks the cumulative weights", "[speculative]") {
  const std::vector<float> w = {0.0f, 0.25f, 0.0f, 0.5f, 0.25f};
  CHECK(inverse_cdf_sample(w.data(), 5, 0.0) == 1);
  CHECK(inverse_cdf_sample(w.data(), 5, 0.2499) == 1);
  CHECK(inverse_cdf_sample(w.data(), 5, 0.25) == 3);
  CHECK(inverse_cdf_sample(w.data(), 5, 0.7499) == 3);
  CHECK(inverse_cdf_sample(w.data(), 5, 0.9999999) == 4);
  const std::vector<float> unnormalised = {2.0f, 0.0f, 6.0f};
  CHECK(inverse_cdf_sample(unnormalised.data(), 3, 0.3) == 2);
}

TEST_CASE("residual_sample draws from max(q - p, 0), or q when that is empty", "[speculative]") {
  const std::vector<float> q = {0.5f, 0.3f, 0.2f}, p = {0.6f, 0.1f, 0.3f};
  // residual = {0, 0.2, 0}: always index 1
  for (double u : {0.0, 0.5, 0.999}) CHECK(residual_sample(q.data(), p.data(), 3, u) == 1);
  CHECK(residual_sample(q.data(), q.data(), 3, 0.6) == 1);  // q == p: from q itself
}

TEST_CASE("speculative_accept_row keeps the agreeing prefix", "[speculative]") {
  const int64_t V = 4, k = 3;
  // draft: one-hot on tokens 2, 1, 3; target: one-hot on 2, 1, 0, then 3
  std::vector<float> p(k * V, 0.0f), q((k + 1) * V, 0.0f);
  const int64_t drafts[k] = {2, 1, 3};
  const int64_t target[k + 1] = {2, 1, 0, 3};
  for (int64_t i = 0; i < k; ++i) p[i * V + drafts[i]] = 1.0f;
  for (int64_t i = 0; i <= k; ++i) q[i * V + target[i]] = 1.0f;
  const double u[k + 1] = {0.3, 0.9, 0.1, 0.5};
  int64_t tokens[k + 1];
  REQUIRE(speculative_accept_row(drafts, k, p.data(), q.data(), V, u, tokens) == 2);
  CHECK(tokens[0] == 2);
  CHECK(tokens[1] == 1);
  CHECK(tokens[2] == 0);
  CHECK(tokens[3] == -1);
  // all agree: k accepted and the bonus token from q_k
  const int64_t agreeing[k] = {2, 1, 0};
  std::vector<float> p2(k * V, 0.0f);
  for (int64_t i = 0; i < k; ++i) p2[i * V + agreeing[i]] = 1.0f;
  REQUIRE(speculative_accept_row(agreeing, k, p2.data(), q.data(), V, u, tokens) == 3);
  CHECK(tokens[3] == 3);
}

TEST_CASE("speculative_accept_row accepts with probability q / p", "[speculative]") {
  const int64_t V = 2;
  const std::vector<float> p = {0.8f, 0.2f}, q = {0.4f, 0.6f, 0.5f, 0.5f};
  const int64_t d[1] = {0};  // q/p = 0.5 for token 0
  int64_t tokens[2];
  const double below[2] = {0.49, 0.0}, above[2] = {0.51, 0.0};
  CHECK(speculative_accept_row(d, 1, p.data(), q.data(), V, below, tokens) == 1);
  CHECK(speculative_accept_row(d, 1, p.data(), q.data(), V, above, tokens) == 0);
  CHECK(tokens[0] == 1);  // residual max(q - p, 0) = {0, 0.4}
}
