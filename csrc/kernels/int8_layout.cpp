#include "kernels/int8_layout.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/int4_layout.h"

namespace fastdecode::kernels {
namespace {

constexpr uint32_t kSignBits = 0x80808080u;  // q <-> q + 128 in each byte of a word

void flip_sign_bits(uint32_t* words, int64_t n) {
  for (int64_t i = 0; i < n; ++i) words[i] ^= kSignBits;
}

}  // namespace

// The bytes as 4-byte words, moved by int4_layout's tile_words / untile_words (every pointer
// here is 4-byte aligned: K is a multiple of 32).
void tile_int8(const int8_t* q, const float* scales, int64_t N, int64_t K, int64_t G,
               uint8_t* packed, float* scales_out) {
  auto* out = reinterpret_cast<uint32_t*>(packed);
  tile_words(reinterpret_cast<const uint32_t*>(q), N, K / 4, out);
  flip_sign_bits(out, N * K / 4);
  tile_words(reinterpret_cast<const uint32_t*>(scales), N, K / G,
             reinterpret_cast<uint32_t*>(scales_out));
}

void tile_int8_in_place(int8_t* q, float* scales, int64_t N, int64_t K, int64_t G) {
  const int64_t groups = K / G;
  std::vector<uint8_t> rows(static_cast<size_t>(kInt4TileRows * K));
  std::vector<float> row_scales(static_cast<size_t>(kInt4TileRows * groups));
  for (int64_t n0 = 0; n0 < N; n0 += kInt4TileRows) {
    const int64_t r = std::min(kInt4TileRows, N - n0);
    uint8_t* tile = reinterpret_cast<uint8_t*>(q) + n0 * K;
    std::memcpy(rows.data(), tile, static_cast<size_t>(r * K));
    std::memcpy(row_scales.data(), scales + n0 * groups, static_cast<size_t>(r * groups) * 4);
    tile_int8(reinterpret_cast<const int8_t*>(rows.data()), row_scales.data(), r, K, G, tile,
              scales + n0 * groups);
  }
}

void untile_int8(const uint8_t* packed, const float* scales, int64_t N, int64_t K, int64_t G,
                 int8_t* q, float* scales_out) {
  auto* out = reinterpret_cast<uint32_t*>(q);
  untile_words(reinterpret_cast<const uint32_t*>(packed), N, K / 4, out);
  flip_sign_bits(out, N * K / 4);
  untile_words(reinterpret_cast<const uint32_t*>(scales), N, K / G,
               reinterpret_cast<uint32_t*>(scales_out));
}

void dequantize_int8_tiled_row(const uint8_t* packed, const float* scales, int64_t N,
                               int64_t K, int64_t G, int64_t n, float* w) {
  const int64_t words = K / 4, groups = K / G;
  const int64_t t = n / kInt4TileRows, i = n % kInt4TileRows, r = tile_rows(N, t);
  const uint8_t* pt = packed + t * kInt4TileRows * K;
  const float* st = scales + t * kInt4TileRows * groups;
  for (int64_t c = 0; c < words; ++c) {
    const uint8_t* bytes = pt + (c * r + i) * 4;
    const float scale = st[(4 * c / G) * r + i];
    for (int j = 0; j < 4; ++j) w[4 * c + j] = static_cast<float>(bytes[j] - 128) * scale;
  }
}

void dequantize_int8_tiled(const uint8_t* packed, const float* scales, int64_t N, int64_t K,
                           int64_t G, float* w) {
  for (int64_t n = 0; n < N; ++n) {
    dequantize_int8_tiled_row(packed, scales, N, K, G, n, w + n * K);
  }
}

}  // namespace fastdecode::kernels
