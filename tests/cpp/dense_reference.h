// The fp32 GEMV / GEMM kernels' check: on every shape of the given lists, y [M, N] =
// kernel(x [M, K], w [N, K]) against a double-precision triple loop, within fp32 rounding
// of dot products of length K. kernel: (x, ldx, M, K, w, ldw, n_begin, n_end, y, ldy).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <vector>

template <typename Kernel>
void require_kernel_matches_double_reference(const Kernel& kernel,
                                             std::initializer_list<int64_t> Ms,
                                             std::initializer_list<int64_t> Ns,
                                             std::initializer_list<int64_t> Ks, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t M : Ms) {
    for (int64_t N : Ns) {
      for (int64_t K : Ks) {
        std::vector<float> x(M * K), w(N * K), y(M * N, -1.0f);
        for (auto& v : x) v = dist(rng);
        for (auto& v : w) v = dist(rng);
        kernel(x.data(), K, M, K, w.data(), K, 0, N, y.data(), N);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            double want = 0;
            for (int64_t k = 0; k < K; ++k) want += double(x[m * K + k]) * w[n * K + k];
            REQUIRE(std::fabs(y[m * N + n] - want) <= 1e-5 * std::sqrt(double(K)) * 4);
          }
        }
      }
    }
  }
}
