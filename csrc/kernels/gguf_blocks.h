// Torch-free decoding of GGUF (ggml) 32-value blocks to fp32, with the arithmetic of the
// gguf package's (and llama.cpp's reference) dequantizers, so the values are bit for bit
// theirs:
//   Q4_0 (18 bytes: fp16 d, 16 bytes of nibbles):                w = d * (q - 8)
//   Q4_1 (20 bytes: fp16 d, fp16 m, 16 bytes of nibbles):         w = d * q + m
//   Q8_0 (34 bytes: fp16 d, 32 int8 values):                      w = q * d
// Byte j of the nibbles holds value j in its low nibble and value j + 16 in its high one.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

// ggml type ids of the block types decoded here.
enum GgufBlockType : int64_t { kGgufQ4_0 = 2, kGgufQ4_1 = 3, kGgufQ8_0 = 8 };

// Bytes per 32-value block of `type`, or 0 when the type is not one of the above.
int64_t gguf_block_bytes(int64_t type);

// IEEE half (bits) -> float, exact for every value (NaN stays NaN).
float half_to_float(uint16_t h);

// blocks: [n_blocks * gguf_block_bytes(type)] -> out: [n_blocks * 32].
void dequantize_gguf_blocks(const uint8_t* blocks, int64_t n_blocks, int64_t type, float* out);

// The blocks as the quantized linears keep them (no float round trip), for `rows` rows of
// `blocks_per_row` blocks each:
//   Q8_0 -> q [rows, 32 * blocks_per_row] int8 and scales [rows, blocks_per_row] (d): the
//   grouped int8 format with groups of 32.
void gguf_q8_0_to_int8(const uint8_t* blocks, int64_t rows, int64_t blocks_per_row, int8_t* q,
                       float* scales);
//   Q4_0 / Q4_1 -> words [rows, 4 * blocks_per_row] (each block's 16 nibble bytes as they
//   are: the row-major int4 layout of int4_layout.h, before tiling) and (scale, zero)
//   [rows, blocks_per_row, 2] with w = (q - 8) * scale + zero: Q4_1 (d, m) -> (d, m + 8d),
//   Q4_0 (d) -> (d, 0). m + 8d is rounded as numpy rounds it (8 * d, then + m).
void gguf_q4_to_int4_rows(const uint8_t* blocks, int64_t rows, int64_t blocks_per_row,
                          int64_t type, uint32_t* words, float* scales_and_zeros);

}  // namespace fastdecode::kernels
