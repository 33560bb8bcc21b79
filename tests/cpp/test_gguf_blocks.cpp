// GGUF block decoding: hand-made blocks with known values, every fp16 bit pattern class
// (normal, subnormal, zero, inf, NaN), and the Q4_1 rounding order (d * q, then + m).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/gguf_blocks.h"

using namespace fastdecode::kernels;

namespace {

void put_half(std::vector<uint8_t>& b, size_t at, uint16_t h) { std::memcpy(&b[at], &h, 2); }

}  // namespace

TEST_CASE("half_to_float converts every class of fp16 exactly") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x3555) == 0.333251953125f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
}

TEST_CASE("block sizes") {
  CHECK(gguf_block_bytes(kGgufQ4_0) == 18);
  CHECK(gguf_block_bytes(kGgufQ4_1) == 20);
  CHECK(gguf_block_bytes(kGgufQ8_0) == 34);
  CHECK(gguf_block_bytes(0) == 0);
}

TEST_CASE("Q4_0, Q4_1 and Q8_0 blocks decode to their values") {
  std::vector<float> out(32);
  std::vector<uint8_t> q40(18, 0);
  put_half(q40, 0, 0x3800);  // d = 0.5
  for (int j = 0; j < 16; ++j) q40[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  dequantize_gguf_blocks(q40.data(), 1, kGgufQ4_0, out.data());
  for (int j = 0; j < 16; ++j) {
    CHECK(out[j] == 0.5f * (j - 8));
    CHECK(out[j + 16] == 0.5f * (15 - j - 8));
  }
  std::vector<uint8_t> q41(20, 0);
  put_half(q41, 0, 0x2e66);  // d = 0.0999755859375
  put_half(q41, 2, 0xbc00);  // m = -1
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | (j << 4));
  dequantize_gguf_blocks(q41.data(), 1, kGgufQ4_1, out.data());
  const float d = half_to_float(0x2e66);
  for (int j = 0; j < 16; ++j) {
    volatile float product = d * static_cast<float>(j);  // rounded before the add
    CHECK(out[j] == product + -1.0f);
    CHECK(out[j + 16] == out[j]);
  }
  std::vector<uint8_t> q80(34 * 2, 0);
  put_half(q80, 0, 0x3c00);
  put_half(q80, 34, 0x4000);
  for (int j = 0; j < 32; ++j) {
    q80[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
    q80[36 + j] = static_cast<uint8_t>(static_cast<int8_t>(-j));
  }
  std::vector<float> two(64);
  dequantize_gguf_blocks(q80.data(), 2, kGgufQ8_0, two.data());
  for (int j = 0; j < 32; ++j) {
    CHECK(two[j] == static_cast<float>(j - 16));
    CHECK(two[32 + j] == -2.0f * j);
  }
}

TEST_CASE("Q8_0 rows repack into grouped int8: the bytes and d as they are") {
  std::vector<uint8_t> rows(34 * 4, 0);  // 2 rows of 2 blocks
  for (int b = 0; b < 4; ++b) {
    put_half(rows, 34 * b, static_cast<uint16_t>(0x3c00 + b));
    for (int j = 0; j < 32; ++j) rows[34 * b + 2 + j] = static_cast<uint8_t>(b * 32 + j);
  }
  std::vector<int8_t> q(2 * 64);
  std::vector<float> scales(4);
  gguf_q8_0_to_int8(rows.data(), 2, 2, q.data(), scales.data());
  for (int b = 0; b < 4; ++b) {
    CHECK(scales[b] == half_to_float(static_cast<uint16_t>(0x3c00 + b)));
    for (int j = 0; j < 32; ++j) {
      CHECK(q[32 * b + j] == static_cast<int8_t>(static_cast<uint8_t>(b * 32 + j)));
    }
  }
}

TEST_CASE("Q4_1 and Q4_0 rows repack into int4 words and (d, m + 8d) pairs") {
  std::vector<uint8_t> q41(20 * 2, 0);  // 1 row of 2 blocks
  put_half(q41, 0, 0x2e66);             // d = 0.0999755859375
  put_half(q41, 2, 0xbc00);             // m = -1
  put_half(q41, 20, 0x3800);            // d = 0.5
  put_half(q41, 22, 0x0000);            // m = 0
  for (int j = 0; j < 16; ++j) {
    q41[4 + j] = static_cast<uint8_t>(j);
    q41[24 + j] = static_cast<uint8_t>(255 - j);
  }
  std::vector<uint32_t> words(8);
  std::vector<float> sz(4);
  gguf_q4_to_int4_rows(q41.data(), 1, 2, kGgufQ4_1, words.data(), sz.data());
  CHECK(std::memcmp(words.data(), q41.data() + 4, 16) == 0);
  CHECK(std::memcmp(words.data() + 4, q41.data() + 24, 16) == 0);
  const float d = half_to_float(0x2e66);
  volatile float eight_d = 8.0f * d;  // rounded before the add, as numpy does
  CHECK(sz[0] == d);
  CHECK(sz[1] == -1.0f + eight_d);
  CHECK(sz[2] == 0.5f);
  CHECK(sz[3] == 4.0f);
  // the int4 formula gives the block's value: (q - 8) * d + (m + 8d) ~ d * q + m
  for (int j = 0; j < 16; ++j) {
    CHECK(std::fabs((j - 8) * sz[0] + sz[1] - (d * j - 1.0f)) < 1e-6f);
  }
  std::vector<uint8_t> q40(18, 0);
  put_half(q40, 0, 0x3c00);
  for (int j = 0; j < 16; ++j) q40[2 + j] = static_cast<uint8_t>(17 * j);
  gguf_q4_to_int4_rows(q40.data(), 1, 1, kGgufQ4_0, words.data(), sz.data());
  CHECK(std::memcmp(words.data(), q40.data() + 2, 16) == 0);
  CHECK(sz[0] == 1.0f);
  CHECK(sz[1] == 0.0f);
}
