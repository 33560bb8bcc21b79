#include "kernels/int8_layout.h"

#include <cstring>
#include <vector>

#include "kernels/int4_layout.h"

namespace fastdecode::kernels {
namespace {

uint32_t flip_sign_bits(uint32_t word) { return word ^ 0x80808080u; }

}  // namespace

void tile_int8(const int8_t* q, const float* scales, int64_t N, int64_t K, int64_t G,
               uint8_t* packed, float* scales_out) {
  const int64_t words = K / 4, groups = K / G;
  std::vector<uint32_t> src(static_cast<size_t>(N * words));
  std::memcpy(src.data(), q, static_cast<size_t>(N * K));
  for (uint32_t& w : src) w = flip_sign_bits(w);
  std::vector<uint32_t> dst(src.size());
  tile_words(src.data(), N, words, dst.data());
  std::memcpy(packed, dst.data(), static_cast<size_t>(N * K));
  static_assert(sizeof(float) == sizeof(uint32_t));
  std::vector<uint32_t> s(static_cast<size_t>(N * groups)), st(s.size());
  std::memcpy(s.data(), scales, s.size() * 4);
  tile_words(s.data(), N, groups, st.data());
  std::memcpy(scales_out, st.data(), st.size() * 4);
}

void untile_int8(const uint8_t* packed, const float* scales, int64_t N, int64_t K, int64_t G,
                 int8_t* q, float* scales_out) {
  const int64_t words = K / 4, groups = K / G;
  std::vector<uint32_t> src(static_cast<size_t>(N * words)), dst(src.size());
  std::memcpy(src.data(), packed, static_cast<size_t>(N * K));
  untile_words(src.data(), N, words, dst.data());
  for (uint32_t& w : dst) w = flip_sign_bits(w);
  std::memcpy(q, dst.data(), static_cast<size_t>(N * K));
  std::vector<uint32_t> st(static_cast<size_t>(N * groups)), s(st.size());
  std::memcpy(st.data(), scales, st.size() * 4);
  untile_words(st.data(), N, groups, s.data());
  std::memcpy(scales_out, s.data(), s.size() * 4);
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
