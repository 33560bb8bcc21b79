// Compiled with -ffp-contract=off (CMakeLists.txt): d * q + m is rounded twice, as numpy
// rounds it, never fused into one FMA.
#include "kernels/gguf_blocks.h"

#include <cstring>

namespace fastdecode::kernels {

int64_t gguf_block_bytes(int64_t type) {
  switch (type) {
    case kGgufQ4_0: return 18;
    case kGgufQ4_1: return 20;
    case kGgufQ8_0: return 34;
    default: return 0;
  }
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {            // inf / NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {         // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {         // +-0
    bits = sign;
  } else {                            // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

float read_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);  // little-endian files on little-endian hosts
  return half_to_float(h);
}

}  // namespace

void dequantize_gguf_blocks(const uint8_t* blocks, int64_t n_blocks, int64_t type, float* out) {
  const int64_t bytes = gguf_block_bytes(type);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* block = blocks + b * bytes;
    float* w = out + b * 32;
    const float d = read_half(block);
    if (type == kGgufQ8_0) {
      for (int i = 0; i < 32; ++i) {
        w[i] = static_cast<float>(static_cast<int8_t>(block[2 + i])) * d;
      }
      continue;
    }
    const bool has_min = type == kGgufQ4_1;
    const float m = has_min ? read_half(block + 2) : 0.0f;
    const uint8_t* qs = block + (has_min ? 4 : 2);
    for (int i = 0; i < 16; ++i) {
      const int lo = qs[i] & 0x0f, hi = qs[i] >> 4;
      if (has_min) {
        w[i] = d * static_cast<float>(lo) + m;
        w[i + 16] = d * static_cast<float>(hi) + m;
      } else {
        w[i] = d * static_cast<float>(lo - 8);
        w[i + 16] = d * static_cast<float>(hi - 8);
      }
    }
  }
}

void gguf_q8_0_to_int8(const uint8_t* blocks, int64_t rows, int64_t blocks_per_row, int8_t* q,
                       float* scales) {
  const int64_t n = rows * blocks_per_row;
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t* block = blocks + b * 34;
    scales[b] = read_half(block);
    std::memcpy(q + b * 32, block + 2, 32);
  }
}

void gguf_q4_to_int4_rows(const uint8_t* blocks, int64_t rows, int64_t blocks_per_row,
                          int64_t type, uint32_t* words, float* scales_and_zeros) {
  const bool has_min = type == kGgufQ4_1;
  const int64_t bytes = gguf_block_bytes(type), n = rows * blocks_per_row;
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t* block = blocks + b * bytes;
    const float d = read_half(block);
    const float eight_d = 8.0f * d;  // two roundings (no FMA: -ffp-contract=off)
    scales_and_zeros[2 * b] = d;
    scales_and_zeros[2 * b + 1] = has_min ? read_half(block + 2) + eight_d : 0.0f;
    std::memcpy(words + 4 * b, block + (has_min ? 4 : 2), 16);
  }
}

}  // namespace fastdecode::kernels
