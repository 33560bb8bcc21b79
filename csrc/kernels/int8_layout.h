// The tiled int8 layout: the int4 layout's 16-row tiles (int4_layout.h) for int8 weights.
//
// A weight q [N, K] int8 (K a multiple of 32) is stored as bytes u = q + 128 (q XOR 0x80,
// so 0..255 for the unsigned operand of vpdpbusd), each row's K bytes read as K / 4 32-bit
// words of four consecutive columns, the rows grouped in tiles of 16 and each tile stored
// column-major (tile_words): one 64-byte load brings four columns of 16 output rows, and one
// vpdpbusd multiplies them with four broadcast activation bytes; the row-major layout needs
// a float conversion and a multiply-add for every such instruction, the tiles one per
// 32-value block. Grouped scales [N, K / G] are tiled the same way (a tile's 16 scales of a
// group contiguous); per-channel scales [N] are their own tiling. Rows [n0, n1) of a tiled
// matrix, n0 a multiple of 16, are a tiled matrix of n1 - n0 rows at packed + n0 * K and
// scales + n0 * (K / G). Exposed as the uint8 weight of fastdecode::int8_linear.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// q [N, K] row-major, scales [N, K / G] -> packed [N, K] (u = q + 128, tiled), scales_out
// [N, K / G] tiled. K a multiple of 32, G == K (per channel) or a divisor of K.
void tile_int8(const int8_t* q, const float* scales, int64_t N, int64_t K, int64_t G,
               uint8_t* packed, float* scales_out);
// The same in place: q's bytes become the tiled packed bytes (tile t occupies the same
// bytes in both layouts, so one tile's copy is the only temporary), scales likewise.
void tile_int8_in_place(int8_t* q, float* scales, int64_t N, int64_t K, int64_t G);
// The inverse.
void untile_int8(const uint8_t* packed, const float* scales, int64_t N, int64_t K, int64_t G,
                 int8_t* q, float* scales_out);
// Row n of a tiled weight, dequantised: w [K] = q * scale.
void dequantize_int8_tiled_row(const uint8_t* packed, const float* scales, int64_t N,
                               int64_t K, int64_t G, int64_t n, float* w);
// All N rows: w [N, K].
void dequantize_int8_tiled(const uint8_t* packed, const float* scales, int64_t N, int64_t K,
                           int64_t G, float* w);

}  // namespace fastdecode::kernels
