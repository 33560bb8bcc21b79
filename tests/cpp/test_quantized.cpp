// csrc/kernels/{quantize,qgemv}: quantizers against their formulas, GEMVs against a double
// dot product of the dequantised weight.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/int4_layout.h"
#include "kernels/int8_layout.h"
#include "kernels/qgemv.h"
#include "kernels/quantize.h"
#include "quantized_weights.h"

using namespace fastdecode::kernels;


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

namespace {
// sum_k |w_hat[k]| * step(k) / 2 for one output: the activation rounding's error bound.
double rounding_bound(const std::vector<float>& xscale, int64_t m, int64_t K,
                      const std::vector<double>& w_hat_abs) {
  double bound = 0;
  for (int64_t k = 0; k < K; ++k) bound += w_hat_abs[k] * xscale[m * (K / 32) + k / 32] / 2;
  return bound;
}
}  // namespace

TEST_CASE("tile_words and untile_words are inverse; int4_at reads the tiled layout", "[int4]") {
  for (int64_t N : {1, 15, 16, 17, 40}) {
    const int64_t K = 64, C = K / 8;
    const auto w = normal(N * K, 9);
    std::vector<uint8_t> rows(N * K / 2);
    std::vector<float> sz(N * 2 * 2);
    for (int64_t n = 0; n < N; ++n) {
      quantize_int4_row(w.data() + n * K, K, 32, rows.data() + n * K / 2, sz.data() + n * 4);
    }
    std::vector<uint32_t> words(N * C), tiled(N * C), back(N * C);
    std::memcpy(words.data(), rows.data(), rows.size());
    tile_words(words.data(), N, C, tiled.data());
    untile_words(tiled.data(), N, C, back.data());
    REQUIRE(back == words);
    // the last tile holds N % 16 rows, column-major
    const int64_t t = (N - 1) / 16, r = N - 16 * t;
    CHECK(tiled[16 * t * C + 1 * r + 0] == words[(16 * t) * C + 1]);
    std::vector<uint8_t> packed(rows.size());
    std::memcpy(packed.data(), tiled.data(), rows.size());
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        REQUIRE(int4_at(packed.data(), N, K, n, k) == unpack_int4(rows.data() + n * K / 2, k));
      }
    }
  }
}

TEST_CASE("dequantize_int4 on a tile-aligned row range and dequantize_int4_row equal the rows "
          "of the whole matrix and the formula; dequantize_int8_rows", "[int4][dequant]") {
  const int64_t N = 40, K = 128, G = 64, C = K / 8;
  const auto w = normal(N * K, 11);
  std::vector<uint8_t> rows(N * K / 2);
  std::vector<float> sz_rows(N * (K / G) * 2);
  for (int64_t n = 0; n < N; ++n) {
    quantize_int4_row(w.data() + n * K, K, G, rows.data() + n * K / 2,
                      sz_rows.data() + n * (K / G) * 2);
  }
  std::vector<uint32_t> words(N * C), tiled(N * C), sz_tiled(sz_rows.size());
  std::memcpy(words.data(), rows.data(), rows.size());
  tile_words(words.data(), N, C, tiled.data());
  tile_words(reinterpret_cast<const uint32_t*>(sz_rows.data()), N, (K / G) * 2,
             sz_tiled.data());
  const auto* packed = reinterpret_cast<const uint8_t*>(tiled.data());
  const auto* sz = reinterpret_cast<const float*>(sz_tiled.data());
  std::vector<float> whole(N * K), part(24 * K);
  dequantize_int4(packed, sz, N, K, G, whole.data());
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      const float* s = sz_rows.data() + n * (K / G) * 2 + (k / G) * 2;
      const float want = (static_cast<float>(unpack_int4(rows.data() + n * K / 2, k)) - 8.0f) *
                         s[0] + s[1];
      REQUIRE(whole[n * K + k] == want);
    }
  }
  // rows [16, 40): the last tile holds 8 rows
  dequantize_int4(packed + 16 * K / 2, sz + 16 * (K / G) * 2, 24, K, G, part.data());
  CHECK(std::equal(part.begin(), part.end(), whole.begin() + 16 * K));
  // single rows (an embedding lookup), in a full tile and in the last, partial one
  for (int64_t n : {3, 37}) {
    std::vector<float> one(K);
    dequantize_int4_row(packed, sz, N, K, G, n, one.data());
    CHECK(std::equal(one.begin(), one.end(), whole.begin() + n * K));
  }

  std::vector<int8_t> q(N * K);
  std::vector<float> scales(N * (K / 32));
  for (int64_t i = 0; i < N * K; ++i) q[i] = static_cast<int8_t>((i * 37) % 255 - 127);
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.01f * static_cast<float>(i + 1);
  std::vector<float> out(10 * K);
  dequantize_int8_rows(q.data(), scales.data(), K, 32, 5, 15, out.data());
  for (int64_t n = 5; n < 15; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      REQUIRE(out[(n - 5) * K + k] ==
              static_cast<float>(q[n * K + k]) * scales[n * (K / 32) + k / 32]);
    }
  }
}

TEST_CASE("quantize_activations rounds per 32-block within half a step", "[qgemv]") {
  const int64_t M = 2, K = 70, K_pad = 96;
  auto x = normal(M * K, 10);
  for (int64_t k = 32; k < 64; ++k) x[k] = 0.0f;  // an all-zero block of row 0
  std::vector<int8_t> q(M * K_pad);
  std::vector<float> scale(M * K_pad / 32);
  quantize_activations(x.data(), M, K, K_pad, q.data(), scale.data());
  CHECK(scale[1] == 0.0f);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K_pad; ++k) {
      const float s = scale[m * 3 + k / 32];
      if (k >= K) {
        REQUIRE(q[m * K_pad + k] == 0);
        continue;
      }
      REQUIRE(std::abs(q[m * K_pad + k]) <= 127);
      REQUIRE(std::fabs(q[m * K_pad + k] * s - x[m * K + k]) <= 0.5f * s * 1.0001f + 1e-30f);
    }
  }
}

TEST_CASE("int8_gemv and int4_gemv: the dispatched kernel equals the portable one and the "
          "exact product within the activation rounding bound", "[qgemv]") {
  for (int64_t M : {1, 2, 5}) {
    for (int64_t N : {1, 5, 16, 37}) {
      for (int64_t G : {32, 64, 256}) {
        const int64_t K = 2 * 256;
        const auto x = normal(M * K, 3), w = normal(N * K, 4);
        std::vector<int8_t> xq(M * K);
        std::vector<float> xscale(M * K / 32), xsum(M * (K / G));
        std::vector<int32_t> bsum(M * K / 32);
        quantize_activations(x.data(), M, K, K, xq.data(), xscale.data());
        QuantizedActivations a{xq.data(), xscale.data(), M, K};
        group_sums(x.data(), M, K, G, xsum.data());
        activation_block_sums(a, bsum.data());
        for (int64_t m = 0; m < M; ++m) {  // the sums of x per group, of xq per block
          for (int64_t g = 0; g < K / G; ++g) {
            double s = 0;
            for (int64_t k = g * G; k < (g + 1) * G; ++k) s += x[m * K + k];
            REQUIRE(std::fabs(xsum[m * (K / G) + g] - s) <= 1e-5 * (1 + std::fabs(s)));
          }
          for (int64_t b = 0; b < K / 32; ++b) {
            int32_t s = 0;
            for (int64_t k = 32 * b; k < 32 * (b + 1); ++k) s += xq[m * K + k];
            REQUIRE(bsum[m * (K / 32) + b] == s);
          }
        }

        const auto [q, scales] = quantize_int8_grouped(w, N, K, G);
        std::vector<float> y8(M * N), y8p(M * N);
        int8_gemv(a, q.data(), scales.data(), K, G, 0, N, y8.data(), N);
        int8_gemv_portable(a, q.data(), scales.data(), K, G, 0, N, y8p.data(), N);
        std::vector<float> y8a = y8p;  // the AVX2 kernel, also where VNNI is dispatched
#if FASTDECODE_X86_CLONES
        if (qgemv_avx2_available()) {
          int8_gemv_avx2(a, q.data(), scales.data(), K, G, 0, N, y8a.data(), N);
        }
#endif

        const Int4Weight w4 = quantize_int4_tiled(w, N, K, G);
        const int64_t tiles = (N + 15) / 16;
        std::vector<float> y4(M * N), y4p(M * N);
        int4_gemv(a, bsum.data(), xsum.data(), w4.packed.data(), w4.sz.data(), N, G, 0, tiles,
                  y4.data(), N);
        int4_gemv_portable(a, bsum.data(), xsum.data(), w4.packed.data(), w4.sz.data(), N, G, 0,
                           tiles, y4p.data(), N);
        std::vector<float> y4a = y4p;  // the AVX2 kernel, also where VNNI is dispatched
#if FASTDECODE_X86_CLONES
        if (qgemv_avx2_available()) {
          int4_gemv_avx2(a, bsum.data(), xsum.data(), w4.packed.data(), w4.sz.data(), N, G, 0,
                         tiles, y4a.data(), N);
        }
#endif
        std::vector<float> w4_deq(N * K);
        dequantize_int4(w4.packed.data(), w4.sz.data(), N, K, G, w4_deq.data());

        for (int64_t n = 0; n < N; ++n) {
          std::vector<double> w8_abs(K), w4_hat_abs(K);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t g = k / G, t = n / 16, r = std::min<int64_t>(16, N - 16 * t);
            const float s4 = w4.sz[16 * t * (K / G) * 2 + (2 * g) * r + n % 16];
            w8_abs[k] = std::fabs(double(q[n * K + k]) * scales[n * (K / G) + g]);
            // the weight the rounded activations meet: (q - 8) * scale
            w4_hat_abs[k] = std::fabs(double(int4_at(w4.packed.data(), N, K, n, k) - 8) * s4);
          }
          for (int64_t m = 0; m < M; ++m) {
            double want8 = 0, want4 = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double xv = x[m * K + k];
              want8 += xv * q[n * K + k] * double(scales[n * (K / G) + k / G]);
              want4 += xv * w4_deq[n * K + k];
              mag += std::fabs(xv * w[n * K + k]);
            }
            const int64_t i = m * N + n;
            REQUIRE(std::fabs(y8[i] - y8p[i]) <= 1e-6 * mag + 1e-6);
            REQUIRE(std::fabs(y8a[i] - y8p[i]) <= 1e-6 * mag + 1e-6);
            REQUIRE(std::fabs(y4[i] - y4p[i]) <= 1e-6 * mag + 1e-6);
            REQUIRE(std::fabs(y4a[i] - y4p[i]) <= 1e-6 * mag + 1e-6);
            REQUIRE(std::fabs(y8[i] - want8) <=
                    rounding_bound(xscale, m, K, w8_abs) + 1e-6 * mag + 1e-6);
            REQUIRE(std::fabs(y4[i] - want4) <=
                    rounding_bound(xscale, m, K, w4_hat_abs) + 1e-5 * mag + 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("split_activations: every 8-bit activation is 16 * hi + lo, lo in [-8, 7], "
          "hi in [-8, 8]", "[qgemv]") {
  const int64_t K = 256;  // each of the 255 values once, then zeros
  std::vector<int8_t> xq(K, 0);
  for (int v = -127; v <= 127; ++v) xq[v + 127] = static_cast<int8_t>(v);
  std::vector<float> scale(K / 32, 1.0f);
  const QuantizedActivations a{xq.data(), scale.data(), 1, K};
  std::vector<int8_t> planes(2 * K);
  split_activations(a, planes.data());
  for (int64_t k = 0; k < K; ++k) {
    const int lo = planes[k], hi = planes[K + k];
    REQUIRE(16 * hi + lo == xq[k]);
    REQUIRE((lo >= -8 && lo <= 7));
    REQUIRE((hi >= -8 && hi <= 8));
  }
}

TEST_CASE("int8_gemv per channel (G == K, K not a multiple of 32)", "[qgemv]") {
  const int64_t M = 2, N = 9, K = 37, K_pad = 64;
  const auto x = normal(M * K, 5), w = normal(N * K, 6);
  std::vector<int8_t> q(N * K);
  std::vector<float> scales(N), y(M * N), xscale(M * K_pad / 32);
  std::vector<int8_t> xq(M * K_pad);
  for (int64_t n = 0; n < N; ++n) scales[n] = quantize_int8_row(w.data() + n * K, K, q.data() + n * K);
  quantize_activations(x.data(), M, K, K_pad, xq.data(), xscale.data());
  int8_gemv({xq.data(), xscale.data(), M, K_pad}, q.data(), scales.data(), K, K, 0, N, y.data(), N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double want = 0, bound = 0;
      for (int64_t k = 0; k < K; ++k) {
        want += x[m * K + k] * double(q[n * K + k]) * scales[n];
        bound += std::fabs(q[n * K + k] * scales[n]) * xscale[m * 2 + k / 32] / 2;
      }
      REQUIRE(std::fabs(y[m * N + n] - want) <= bound + 1e-5);
    }
  }
}

TEST_CASE("int8 tiled layout: round trip, dequantisation and the GEMV on every path equal to "
          "the row-major kernel's", "[qgemv]") {
  for (int64_t K : {96, 512}) {
    // groups of 32, of 64 (where they divide K), and per channel (G == K)
    for (int64_t G : std::vector<int64_t>{32, K % 64 == 0 ? 64 : 32, K}) {
      for (int64_t N : {1, 5, 16, 37}) {
        const auto w = normal(N * K, 7);
        auto [q, scales] = quantize_int8_grouped(w, N, K, G);
        q[0] = -128;  // the full int8 range, which the sign trick of vpmaddubsw could not take
        std::vector<uint8_t> packed(N * K);
        std::vector<float> tiled_scales(scales.size()), back_scales(scales.size());
        tile_int8(q.data(), scales.data(), N, K, G, packed.data(), tiled_scales.data());
        std::vector<int8_t> in_place = q;
        std::vector<float> in_place_scales = scales;
        tile_int8_in_place(in_place.data(), in_place_scales.data(), N, K, G);
        REQUIRE(std::memcmp(in_place.data(), packed.data(), packed.size()) == 0);
        REQUIRE(in_place_scales == tiled_scales);
        std::vector<int8_t> back(N * K);
        untile_int8(packed.data(), tiled_scales.data(), N, K, G, back.data(), back_scales.data());
        REQUIRE(back == q);
        REQUIRE(back_scales == scales);
        std::vector<float> deq_rows(N * K), deq_tiled(N * K);
        dequantize_int8_rows(q.data(), scales.data(), K, G, 0, N, deq_rows.data());
        dequantize_int8_tiled(packed.data(), tiled_scales.data(), N, K, G, deq_tiled.data());
        REQUIRE(deq_rows == deq_tiled);

        for (int64_t M : {1, 2, 5, 9, 17}) {
          const auto x = normal(M * K, 8);
          std::vector<int8_t> xq(M * K);
          std::vector<float> xscale(M * K / 32);
          quantize_activations(x.data(), M, K, K, xq.data(), xscale.data());
          const QuantizedActivations a{xq.data(), xscale.data(), M, K};
          std::vector<int32_t> bsum(M * K / 32);
          activation_block_sums(a, bsum.data());
          const int64_t tiles = (N + 15) / 16;
          std::vector<float> want(M * N), y(M * N), yp(M * N);
          int8_gemv_portable(a, q.data(), scales.data(), K, G, 0, N, want.data(), N);
          int8_tiled_gemv(a, bsum.data(), packed.data(), tiled_scales.data(), N, G, 0, tiles,
                          y.data(), N);
          int8_tiled_gemv_portable(a, bsum.data(), packed.data(), tiled_scales.data(), N, G, 0,
                                   tiles, yp.data(), N);
          std::vector<float> ya = yp;  // the AVX2 kernel, also where VNNI is dispatched
#if FASTDECODE_X86_CLONES
          if (qgemv_avx2_available()) {
            int8_tiled_gemv_avx2(a, bsum.data(), packed.data(), tiled_scales.data(), N, G, 0,
                                 tiles, ya.data(), N);
            // the caller's split activations (the CPU op's) give the same bits as the
            // kernel's own
            std::vector<int8_t> planes(2 * M * K);
            split_activations(a, planes.data());
            QuantizedActivations with_split = a;
            with_split.split = planes.data();
            std::vector<float> ys(M * N);
            int8_tiled_gemv_avx2(with_split, bsum.data(), packed.data(), tiled_scales.data(), N,
                                 G, 0, tiles, ys.data(), N);
            REQUIRE(ys == ya);
          }
#endif
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t n = 0; n < N; ++n) {
              double mag = 0;
              for (int64_t k = 0; k < K; ++k) {
                mag += std::fabs(double(x[m * K + k]) * q[n * K + k] * scales[n * (K / G) + k / G]);
              }
              const int64_t i = m * N + n;
              REQUIRE(std::fabs(y[i] - want[i]) <= 1e-6 * mag + 1e-6);
              REQUIRE(std::fabs(yp[i] - want[i]) <= 1e-6 * mag + 1e-6);
              REQUIRE(std::fabs(ya[i] - want[i]) <= 1e-6 * mag + 1e-6);
            }
          }
        }
      }
    }
  }
}
