// The packed int4 weight layout: 16-row tiles of 32-bit words.
//
// Row-major first: each row of K values (K a multiple of 32) is K / 8 words; word c = 4b + j
// of a row holds bytes 4j..4j+3 of its 32-value block b in GGML's order, i.e. byte t holds
// value 32b + 4j + t in its low nibble and value 32b + 16 + 4j + t in its high nibble.
// Then rows are grouped in tiles of 16 (the last tile holds the r = N mod 16 rows left) and
// each tile is stored column-major: word c of the tile's row i sits at tile_base + c * r + i.
// One 64-byte load thus brings 4 + 4 consecutive columns of 16 output rows, which is the
// operand of one AVX-512 VNNI dot-product instruction per nibble half (csrc/kernels/qgemv).
// The scales and zeros [N, K / G, 2] are tiled the same way (word c = 2g + {0: scale,
// 1: zero}), so a tile's 16 scales of a group are contiguous.
#pragma once

#include <cstdint>
#include <string>

namespace fastdecode::kernels {

constexpr int64_t kInt4TileRows = 16;

// The int4 group sizes the kernels and the checkpoint format take (values per scale/zero);
// every one a multiple of the 32-value nibble block. Exposed as _C.int4_groupsizes.
constexpr int64_t kInt4GroupSizes[] = {32, 64, 128, 256};

inline bool is_int4_groupsize(int64_t g) {
  for (int64_t allowed : kInt4GroupSizes) {
    if (g == allowed) return true;
  }
  return false;
}

// "32, 64, 128, 256": the list above, for error messages.
inline std::string int4_groupsizes_text() {
  std::string text;
  for (int64_t g : kInt4GroupSizes) text += (text.empty() ? "" : ", ") + std::to_string(g);
  return text;
}

// Rows in tile t of an N-row matrix.
inline int64_t tile_rows(int64_t N, int64_t t) {
  const int64_t left = N - t * kInt4TileRows;
  return left < kInt4TileRows ? left : kInt4TileRows;
}

// src: [N, C] 32-bit words row-major -> dst: the same words in 16-row column-major tiles.
void tile_words(const uint32_t* src, int64_t N, int64_t C, uint32_t* dst);
// The inverse of tile_words.
void untile_words(const uint32_t* src, int64_t N, int64_t C, uint32_t* dst);

// The 4-bit value at (n, k) of a tiled packed weight with K columns.
int int4_at(const uint8_t* packed, int64_t N, int64_t K, int64_t n, int64_t k);

// Tiled packed [N, K / 2] and tiled scales/zeros [N, K / G, 2] -> w [N, K] row-major fp32,
// w = (q - 8) * scale + zero (the GEMM path for many activation rows). Rows [n0, n1) of a
// matrix, n0 a multiple of 16, are this call on packed + n0 * K / 2, sz + n0 * (K / G) * 2
// with N = n1 - n0.
void dequantize_int4(const uint8_t* packed, const float* sz, int64_t N, int64_t K, int64_t G,
                     float* w);
// Row n of the same: w [K] (an embedding lookup reads single rows of a tied int4 head).
void dequantize_int4_row(const uint8_t* packed, const float* sz, int64_t N, int64_t K, int64_t G,
                         int64_t n, float* w);

}  // namespace fastdecode::kernels
