// csrc/kernels/rms_norm: against a double-precision reference, row lengths around the lane
// count, in place.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/rms_norm.h"

using fastdecode::kernels::rms_norm_f32;

TEST_CASE("rms_norm_f32 matches a double reference", "[rms_norm]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int64_t rows : {1, 3}) {
    for (int64_t E : {1, 15, 16, 17, 576}) {
      std::vector<float> x(rows * E), w(E), y(rows * E);
      for (auto& v : x) v = dist(rng);
      for (auto& v : w) v = dist(rng);
      rms_norm_f32(x.data(), rows, E, w.data(), 1e-5f, y.data());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t e = 0; e < E; ++e) ss += double(x[r * E + e]) * x[r * E + e];
        const double inv = 1.0 / std::sqrt(ss / E + 1e-5);
        for (int64_t e = 0; e < E; ++e) {
          const double want = x[r * E + e] * inv * w[e];
          REQUIRE(std::fabs(y[r * E + e] - want) <= 1e-5 * std::fabs(want) + 1e-6);
        }
      }
      // in place (y aliases x) gives the same result
      std::vector<float> inplace = x;
      rms_norm_f32(inplace.data(), rows, E, w.data(), 1e-5f, inplace.data());
      REQUIRE(inplace == y);
    }
  }
}
