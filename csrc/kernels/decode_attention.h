// Torch-free attention for one decode position: RoPE on q and k, the new k/v written into
// the cache, then softmax(q k^T / sqrt(D)) v over cache positions 0..pos, per query head,
// with grouped-query heads sharing a key/value head. Replaces ~20 small ATen ops per layer
// of a decode step with one call.
#pragma once

#include <cstdint>

namespace fastdecode::kernels {

struct DecodeAttentionShape {
  int64_t n_head;     // H query heads
  int64_t n_kv_head;  // Hkv key/value heads (H % Hkv == 0)
  int64_t head_dim;   // D (even)
  int64_t cache_len;  // L positions per cache row
};

// The caches hold fp32 (float) or fp16 values; an fp16 cache element is the IEEE binary16
// bit pattern (uint16_t, torch.float16's storage). An fp16 cache halves the bytes a decode
// step reads (at 8 rows and 100 positions, 37 MB of fp32 keys and values a step, more than
// the L3); each value is rounded to nearest-even once, when written, as torch's
// .to(torch.float16) rounds it, and widened exactly when read.

// qkv: this row's projections [(H + 2 Hkv) * D] (q heads, then k heads, then v heads, each
// D values with (re, im) pairs interleaved); rope: [D / 2][2] (cos, sin) for position `pos`.
// k_cache, v_cache: this row's caches [Hkv][L][D]; row k/v at `pos` are overwritten.
void write_rotated_kv(const float* qkv, const float* rope, int64_t pos,
                      const DecodeAttentionShape& s, float* k_cache, float* v_cache);
void write_rotated_kv(const float* qkv, const float* rope, int64_t pos,
                      const DecodeAttentionShape& s, uint16_t* k_cache, uint16_t* v_cache);

// Output of query head h: out[D]. `scores` holds pos + 1 floats. The fp16 caches' values
// enter the same arithmetic as fp32 ones (widened exactly), so a cache of fp16-representable
// values gives the same output bit for bit in either dtype.
void attend_one_head(const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const float* k_cache, const float* v_cache,
                     float* scores, float* out);
void attend_one_head(const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const uint16_t* k_cache,
                     const uint16_t* v_cache, float* scores, float* out);

}  // namespace fastdecode::kernels
