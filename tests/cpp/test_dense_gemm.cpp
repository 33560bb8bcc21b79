// csrc/kernels/dense_gemm on every path this build runs (the tiles on avx512 / avx2, the
// plain loop on the portable build): against a double-precision triple loop on odd shapes
// (every tile size and a partial last column block), column ranges, and a row's result not
// depending on the other rows.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "dense_reference.h"
#include "kernels/dense_gemm.h"

using fastdecode::kernels::gemm_f32;

TEST_CASE("gemm_f32 matches a double reference on odd shapes", "[gemm]") {
  require_kernel_matches_double_reference(gemm_f32, {1, 3, 17, 70}, {1, 5, 6, 13, 50},
                                          {1, 15, 16, 17, 100}, 11);
}

TEST_CASE("gemm_f32 writes only its column range, and a row alone equals it in a batch",
          "[gemm]") {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t M = 67, N = 20, K = 37;
  std::vector<float> x(M * K), w(N * K), y(M * N, -7.0f);
  for (auto& v : x) v = dist(rng);
  for (auto& v : w) v = dist(rng);
  gemm_f32(x.data(), K, M, K, w.data(), K, 4, 15, y.data(), N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      if (n < 4 || n >= 15) REQUIRE(y[m * N + n] == -7.0f);
    }
  }
  for (int64_t m : {0, 3, 65, 66}) {  // alone: another tile size, the same sums bit for bit
    std::vector<float> one(N, 0.0f);
    gemm_f32(x.data() + m * K, K, 1, K, w.data(), K, 4, 15, one.data(), N);
    for (int64_t n = 4; n < 15; ++n) REQUIRE(one[n] == y[m * N + n]);
  }
}
