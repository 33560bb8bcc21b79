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
