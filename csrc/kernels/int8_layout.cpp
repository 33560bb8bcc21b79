#include "kernels/int8_layout.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/int4_layout.h"

namespace fastdecode::kernels {
namespace {

// Word (i, c) of a row-major [N, C] matrix of 4-byte words <-> its place in the 16-row tiles,
// copied in place order without a temporary (a caller's chunk may be half a large head).
// flip: XOR of each byte's sign bit (q <-> q + 128); words of floats pass with flip 0.
void move_words(const uint8_t* src, int64_t N, int64_t C, uint32_t flip, bool to_tiles,
                uint8_t* dst) {
  for (int64_t t = 0; t * kInt4TileRows < N; ++t) {
    const int64_t r = tile_rows(N, t), base = t * kInt4TileRows * C;
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t row_major = base + i * C + c, tiled = base + c * r + i;
        uint32_t w;
        std::memcpy(&w, src + 4 * (to_tiles ? row_major : tiled), 4);
        w ^= flip;
        std::memcpy(dst + 4 * (to_tiles ? tiled : row_major), &w, 4);
      }
    }
  }
}

constexpr uint32_t kSignBits = 0x80808080u;

}  // namespace

void tile_int8(const int8_t* q, const float* scales, int64_t N, int64_t K, int64_t G,
               uint8_t* packed, float* scales_out) {
  move_words(reinterpret_cast<const uint8_t*>(q), N, K / 4, kSignBits, true, packed);
  move_words(reinterpret_cast<const uint8_t*>(scales), N, K / G, 0, true,
             reinterpret_cast<uint8_t*>(scales_out));
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
  move_words(packed, N, K / 4, kSignBits, false, reinterpret_cast<uint8_t*>(q));
  move_words(reinterpret_cast<const uint8_t*>(scales), N, K / G, 0, false,
             reinterpret_cast<uint8_t*>(scales_out));
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
