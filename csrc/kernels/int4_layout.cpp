#include "kernels/int4_layout.h"

#include <cstring>

namespace fastdecode::kernels {

void tile_words(const uint32_t* src, int64_t N, int64_t C, uint32_t* dst) {
  for (int64_t t = 0; t * kInt4TileRows < N; ++t) {
    const int64_t r = tile_rows(N, t), base = t * kInt4TileRows * C;
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t c = 0; c < C; ++c) dst[base + c * r + i] = src[base + i * C + c];
    }
  }
}

void untile_words(const uint32_t* src, int64_t N, int64_t C, uint32_t* dst) {
  for (int64_t t = 0; t * kInt4TileRows < N; ++t) {
    const int64_t r = tile_rows(N, t), base = t * kInt4TileRows * C;
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t c = 0; c < C; ++c) dst[base + i * C + c] = src[base + c * r + i];
    }
  }
}

int int4_at(const uint8_t* packed, int64_t N, int64_t K, int64_t n, int64_t k) {
  const int64_t t = n / kInt4TileRows, i = n % kInt4TileRows, r = tile_rows(N, t);
  const int64_t c = (k / 32) * 4 + (k % 16) / 4;  // word of the row
  const int64_t word = t * kInt4TileRows * (K / 8) + c * r + i;
  const uint8_t byte = packed[word * 4 + k % 4];
  return (k % 32) < 16 ? (byte & 0x0f) : (byte >> 4);
}

void dequantize_int4_row(const uint8_t* packed, const float* sz, int64_t N, int64_t K, int64_t G,
                         int64_t n, float* w) {
  const int64_t words = K / 8, groups = K / G, blocks = K / 32;
  const int64_t t = n / kInt4TileRows, i = n % kInt4TileRows, r = tile_rows(N, t);
  const uint8_t* pt = packed + t * kInt4TileRows * words * 4;
  const float* st = sz + t * kInt4TileRows * groups * 2;
  // a block's 16 bytes are words 4b..4b+3 of the row: byte j holds values j and j + 16
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t bytes[16];
    for (int j = 0; j < 4; ++j) std::memcpy(bytes + 4 * j, pt + ((4 * b + j) * r + i) * 4, 4);
    float* out = w + 32 * b;
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>(bytes[j] & 0x0f);
      out[j + 16] = static_cast<float>(bytes[j] >> 4);
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    const float scale = st[(2 * g) * r + i], zero = st[(2 * g + 1) * r + i];
    float* out = w + g * G;
    for (int64_t k = 0; k < G; ++k) out[k] = (out[k] - 8.0f) * scale + zero;
  }
}

void dequantize_int4(const uint8_t* packed, const float* sz, int64_t N, int64_t K, int64_t G,
                     float* w) {
  for (int64_t n = 0; n < N; ++n) dequantize_int4_row(packed, sz, N, K, G, n, w + n * K);
}

}  // namespace fastdecode::kernels
