// Test inputs shared by the quantized-GEMV tests: normal samples, int8 weights quantized per
// group (row-major) and int4 weights in the kernels' tiled layout.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/int4_layout.h"
#include "kernels/quantize.h"

namespace fastdecode::kernels {

inline std::vector<float> normal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// q: [N, K] row-major, scales: [N, K / G] (G == K: per channel), by quantize_int8_row.
struct Int8Weight {
  std::vector<int8_t> q;
  std::vector<float> scales;
};

inline Int8Weight quantize_int8_grouped(const std::vector<float>& w, int64_t N, int64_t K,
                                        int64_t G) {
  Int8Weight out{std::vector<int8_t>(N * K), std::vector<float>(N * (K / G))};
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < K / G; ++g) {
      out.scales[n * (K / G) + g] = quantize_int8_row(w.data() + n * K + g * G, G,
                                                      out.q.data() + n * K + g * G);
    }
  }
  return out;
}

// packed: [N, K / 2] tiled words; sz: [N, K / G, 2] tiled scales and zeros.
struct Int4Weight {
  std::vector<uint8_t> packed;
  std::vector<float> sz;
};

inline Int4Weight quantize_int4_tiled(const std::vector<float>& w, int64_t N, int64_t K,
                                      int64_t G) {
  std::vector<uint8_t> rows(N * K / 2);
  std::vector<float> rows_sz(N * (K / G) * 2);
  for (int64_t n = 0; n < N; ++n) {
    quantize_int4_row(w.data() + n * K, K, G, rows.data() + n * K / 2,
                      rows_sz.data() + n * (K / G) * 2);
  }
  Int4Weight out{std::vector<uint8_t>(rows.size()), std::vector<float>(rows_sz.size())};
  std::vector<uint32_t> words(rows.size() / 4), tiled(rows.size() / 4);
  std::memcpy(words.data(), rows.data(), rows.size());
  tile_words(words.data(), N, K / 8, tiled.data());
  std::memcpy(out.packed.data(), tiled.data(), rows.size());
  std::vector<uint32_t> sz_words(rows_sz.size()), sz_tiled(rows_sz.size());
  std::memcpy(sz_words.data(), rows_sz.data(), rows_sz.size() * 4);
  tile_words(sz_words.data(), N, (K / G) * 2, sz_tiled.data());
  std::memcpy(out.sz.data(), sz_tiled.data(), rows_sz.size() * 4);
  return out;
}

}  // namespace fastdecode::kernels
