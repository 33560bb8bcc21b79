// csrc/kernels/decode_attention against a direct double-precision computation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/decode_attention.h"

using namespace fastdecode::kernels;

TEST_CASE("decode attention: rotated cache write and causal softmax over 0..pos", "[attention]") {
  const DecodeAttentionShape s{4, 2, 8, 6};  // H, Hkv, D, L
  const int64_t D = s.head_dim, pos = 3;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> qkv((s.n_head + 2 * s.n_kv_head) * D), kc(s.n_kv_head * s.cache_len * D),
      vc(kc.size()), rope(D), scores(s.cache_len), out(D);
  for (auto& x : qkv) x = nd(rng);
  for (auto& x : kc) x = nd(rng);
  for (auto& x : vc) x = nd(rng);
  for (int64_t j = 0; j < D / 2; ++j) {
    rope[2 * j] = std::cos(0.3f * (j + 1));
    rope[2 * j + 1] = std::sin(0.3f * (j + 1));
  }
  const std::vector<float> k_before = kc;
  write_rotated_kv(qkv.data(), rope.data(), pos, s, kc.data(), vc.data());
  for (int64_t hk = 0; hk < s.n_kv_head; ++hk) {
    const float* k = qkv.data() + (s.n_head + hk) * D;
    for (int64_t j = 0; j < D / 2; ++j) {
      const float* got = kc.data() + (hk * s.cache_len + pos) * D + 2 * j;
      CHECK(got[0] == Approx(k[2 * j] * rope[2 * j] - k[2 * j + 1] * rope[2 * j + 1]));
      CHECK(got[1] == Approx(k[2 * j + 1] * rope[2 * j] + k[2 * j] * rope[2 * j + 1]));
    }
    CHECK(kc[(hk * s.cache_len + pos + 1) * D] == k_before[(hk * s.cache_len + pos + 1) * D]);
  }
  for (int64_t h = 0; h < s.n_head; ++h) {
    attend_one_head(qkv.data(), rope.data(), pos, h, s, kc.data(), vc.data(), scores.data(),
                    out.data());
    const int64_t hk = h / 2;
    std::vector<double> q(D);
    const float* qh = qkv.data() + h * D;
    for (int64_t j = 0; j < D / 2; ++j) {
      q[2 * j] = double(qh[2 * j]) * rope[2 * j] - double(qh[2 * j + 1]) * rope[2 * j + 1];
      q[2 * j + 1] = double(qh[2 * j + 1]) * rope[2 * j] + double(qh[2 * j]) * rope[2 * j + 1];
    }
    std::vector<double> w(pos + 1);
    double z = 0;
    for (int64_t t = 0; t <= pos; ++t) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += q[d] * kc[(hk * s.cache_len + t) * D + d];
      w[t] = std::exp(dot / std::sqrt(double(D)));
      z += w[t];
    }
    for (int64_t d = 0; d < D; ++d) {
      double want = 0;
      for (int64_t t = 0; t <= pos; ++t) want += w[t] / z * vc[(hk * s.cache_len + t) * D + d];
      REQUIRE(out[d] == Approx(want).epsilon(1e-5).margin(1e-6));
    }
  }
}

namespace {
uint16_t half_bits(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof(bits));
  return bits;
}
float from_half_bits(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof(h));
  return static_cast<float>(h);
}
}  // namespace

TEST_CASE("decode attention over fp16 caches: the fp32 writes rounded, the fp32 arithmetic",
          "[attention]") {
  // D = 72: 64 values through the vector loops and 8 through the tails
  const DecodeAttentionShape s{6, 2, 72, 40};  // H, Hkv, D, L
  const int64_t D = s.head_dim, pos = 29;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> qkv((s.n_head + 2 * s.n_kv_head) * D), rope(D), scores(s.cache_len);
  std::vector<float> kc(s.n_kv_head * s.cache_len * D), vc(kc.size());
  for (auto& x : qkv) x = from_half_bits(half_bits(nd(rng)));
  for (auto& x : kc) x = from_half_bits(half_bits(nd(rng)));  // fp16-representable caches
  for (auto& x : vc) x = from_half_bits(half_bits(nd(rng)));
  std::vector<uint16_t> kh(kc.size()), vh(vc.size());
  for (size_t i = 0; i < kc.size(); ++i) kh[i] = half_bits(kc[i]), vh[i] = half_bits(vc[i]);
  SECTION("a rotated write is the fp32 write rounded to nearest-even") {
    for (int64_t j = 0; j < D / 2; ++j) {
      rope[2 * j] = std::cos(0.37f * (j + 1));
      rope[2 * j + 1] = std::sin(0.37f * (j + 1));
    }
    write_rotated_kv(qkv.data(), rope.data(), pos, s, kc.data(), vc.data());
    write_rotated_kv(qkv.data(), rope.data(), pos, s, kh.data(), vh.data());
    for (size_t i = 0; i < kc.size(); ++i) {
      REQUIRE(kh[i] == half_bits(kc[i]));
      REQUIRE(vh[i] == half_bits(vc[i]));
    }
  }
  SECTION("the same values give the same outputs bit for bit") {
    for (int64_t j = 0; j < D / 2; ++j) rope[2 * j] = 1.0f, rope[2 * j + 1] = 0.0f;  // exact
    write_rotated_kv(qkv.data(), rope.data(), pos, s, kc.data(), vc.data());
    write_rotated_kv(qkv.data(), rope.data(), pos, s, kh.data(), vh.data());
    std::vector<float> out32(D), out16(D);
    for (int64_t h = 0; h < s.n_head; ++h) {
      attend_one_head(qkv.data(), rope.data(), pos, h, s, kc.data(), vc.data(), scores.data(),
                      out32.data());
      attend_one_head(qkv.data(), rope.data(), pos, h, s, kh.data(), vh.data(), scores.data(),
                      out16.data());
      for (int64_t d = 0; d < D; ++d) REQUIRE(out16[d] == out32[d]);
    }
  }
}
