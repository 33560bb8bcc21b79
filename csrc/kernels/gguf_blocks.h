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

}  // namespace fastdecode::kernels
