// csrc/kernels/dense_gemv: against a double-precision triple loop, odd shapes, row ranges.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "dense_reference.h"
#include "kernels/dense_gemv.h"

using fastdecode::kernels::gemv_f32;

TEST_CASE("gemv_f32 matches a double reference on odd shapes", "[gemv]") {
  require_kernel_matches_double_reference(gemv_f32, {1, 3, 8}, {1, 4, 7, 65},
                                          {1, 15, 16, 17, 576}, 7);
}

TEST_CASE("gemv_f32 writes only its row range", "[gemv]") {
  const int64_t M = 2, N = 10, K = 20;
  std::vector<float> x(M * K, 1.0f), w(N * K, 0.5f), y(M * N, -7.0f);
  gemv_f32(x.data(), K, M, K, w.data(), K, 3, 9, y.data(), N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      CHECK(y[m * N + n] == ((n >= 3 && n < 9) ? 10.0f : -7.0f));
    }
  }
}
