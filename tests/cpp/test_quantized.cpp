// csrc/kernels/{quantize,qgemv}: quantizers against their formulas, GEMVs against a double
// dot product of the dequantised weight.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/qgemv.h"
#include "kernels/quantize.h"

using namespace fastdecode::kernels;

namespace {
std::vector<float> normal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
}  // namespace

TEST_CASE("int8 quantizer is symmetric and within half a step", "[quant]") {
  const auto w = normal(300, 1);
  std::vector<int8_t> q(300);
  const float scale = quantize_int8_row(w.data(), 300, q.data());
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  CHECK(scale == amax / 127.5f);
  for (int k = 0; k < 300; ++k) REQUIRE(std::fabs(q[k] * scale - w[k]) <= 0.5f * scale * 1.0001f);
  std::vector<float> zeros(8, 0.0f);
  CHECK(quantize_int8_row(zeros.data(), 8, q.data()) > 0.0f);  // eps, never 0
}

TEST_CASE("int4 quantizer packs GGML nibble order and bounds the error", "[quant]") {
  const int64_t K = 128, G = 64;
  const auto w = normal(K, 2);
  std::vector<uint8_t> packed(K / 2);
  std::vector<float> sz(K / G * 2);
  quantize_int4_row(w.data(), K, G, packed.data(), sz.data());
  for (int64_t k = 0; k < K; ++k) {
    const float scale = sz[2 * (k / G)], zero = sz[2 * (k / G) + 1];
    const int q = unpack_int4(packed.data(), k);
    REQUIRE(q >= 0);
    REQUIRE(q <= 15);
    REQUIRE(std::fabs((q - 8) * scale + zero - w[k]) <= 0.5f * scale * 1.001f);
  }
  CHECK((packed[0] & 0x0f) == unpack_int4(packed.data(), 0));
  CHECK((packed[0] >> 4) == unpack_int4(packed.data(), 16));
}

TEST_CASE("int8_gemv and int4_gemv equal the dequantised dot product", "[qgemv]") {
  for (int64_t M : {1, 3}) {
    for (int64_t N : {1, 5, 67}) {
      for (int64_t G : {32, 64, 256}) {
        const int64_t K = 2 * 256;
        const auto x = normal(M * K, 3), w = normal(N * K, 4);
        std::vector<int8_t> q(N * K);
        std::vector<float> scales(N * (K / G)), y(M * N);
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t g = 0; g < K / G; ++g) {
            scales[n * (K / G) + g] = quantize_int8_row(w.data() + n * K + g * G, G,
                                                        q.data() + n * K + g * G);
          }
        }
        int8_gemv(x.data(), M, K, q.data(), scales.data(), G, 0, N, y.data(), N);
        std::vector<uint8_t> packed(N * K / 2);
        std::vector<float> sz(N * (K / G) * 2), xsum(M * (K / G)), y4(M * N);
        for (int64_t n = 0; n < N; ++n) {
          quantize_int4_row(w.data() + n * K, K, G, packed.data() + n * K / 2,
                            sz.data() + n * (K / G) * 2);
        }
        group_sums(x.data(), M, K, G, xsum.data());
        int4_gemv(x.data(), M, K, packed.data(), sz.data(), G, xsum.data(), 0, N, y4.data(), N);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            double want8 = 0, want4 = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const int64_t g = k / G;
              const double w8 = double(q[n * K + k]) * scales[n * (K / G) + g];
              const double w4 = (unpack_int4(packed.data() + n * K / 2, k) - 8) *
                                    double(sz[(n * (K / G) + g) * 2]) +
                                sz[(n * (K / G) + g) * 2 + 1];
              want8 += x[m * K + k] * w8;
              want4 += x[m * K + k] * w4;
              mag += std::fabs(x[m * K + k] * w[n * K + k]);
            }
            REQUIRE(std::fabs(y[m * N + n] - want8) <= 1e-5 * mag + 1e-6);
            REQUIRE(std::fabs(y4[m * N + n] - want4) <= 1e-5 * mag + 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("int8_gemv per channel (G == K, K not a multiple of 16)", "[qgemv]") {
  const int64_t M = 2, N = 9, K = 37;
  const auto x = normal(M * K, 5), w = normal(N * K, 6);
  std::vector<int8_t> q(N * K);
  std::vector<float> scales(N), y(M * N);
  for (int64_t n = 0; n < N; ++n) scales[n] = quantize_int8_row(w.data() + n * K, K, q.data() + n * K);
  int8_gemv(x.data(), M, K, q.data(), scales.data(), K, 0, N, y.data(), N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double want = 0;
      for (int64_t k = 0; k < K; ++k) want += x[m * K + k] * double(q[n * K + k]) * scales[n];
      REQUIRE(std::fabs(y[m * N + n] - want) <= 1e-5);
    }
  }
}
