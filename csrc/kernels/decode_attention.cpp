#include "kernels/decode_attention.h"

#include <cmath>
#include <vector>

#include "kernels/fast_exp.h"
#include "kernels/simd.h"

namespace fastdecode::kernels {

namespace {
// (re, im) pairs rotated by (cos, sin): one complex multiply per pair.
inline void rotate(const float* x, const float* rope, int64_t D, float* out) {
  for (int64_t j = 0; j < D / 2; ++j) {
    const float re = x[2 * j], im = x[2 * j + 1];
    const float c = rope[2 * j], s = rope[2 * j + 1];
    out[2 * j] = re * c - im * s;
    out[2 * j + 1] = im * c + re * s;
  }
}
}  // namespace

void write_rotated_kv(const float* qkv, const float* rope, int64_t pos,
                      const DecodeAttentionShape& s, float* k_cache, float* v_cache) {
  const int64_t D = s.head_dim;
  const float* k = qkv + s.n_head * D;
  const float* v = k + s.n_kv_head * D;
  for (int64_t hk = 0; hk < s.n_kv_head; ++hk) {
    float* kdst = k_cache + (hk * s.cache_len + pos) * D;
    float* vdst = v_cache + (hk * s.cache_len + pos) * D;
    rotate(k + hk * D, rope, D, kdst);
    for (int64_t d = 0; d < D; ++d) vdst[d] = v[hk * D + d];
  }
}

FASTDECODE_KERNEL_BODY
void attend_one_head_body(const float* qkv, const float* rope, int64_t pos, int64_t h,
                          const DecodeAttentionShape& s, const float* k_cache, const float* v_cache,
                          float* scores, float* out) {
  const int64_t D = s.head_dim;
  const int64_t hk = h / (s.n_head / s.n_kv_head);
  const float* kc = k_cache + hk * s.cache_len * D;
  const float* vc = v_cache + hk * s.cache_len * D;
  float q[512];  // D <= 512 is checked by the caller
  rotate(qkv + h * D, rope, D, q);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  float max = -INFINITY;
  const int64_t d_full = D - D % kLanes;
  for (int64_t t = 0; t <= pos; ++t) {
    const float* kt = kc + t * D;
    // kLanes partial sums: a single running sum is one FMA-latency chain per position and
    // does not vectorise without -ffast-math (it made attention ~4 cycles per multiply-add)
    float part[kLanes] = {};
    for (int64_t d = 0; d < d_full; d += kLanes) {
      for (int l = 0; l < kLanes; ++l) part[l] += q[d + l] * kt[d + l];
    }
    float dot = 0.0f;
    for (int l = 0; l < kLanes; ++l) dot += part[l];
    for (int64_t d = d_full; d < D; ++d) dot += q[d] * kt[d];
    scores[t] = dot * scale;
    max = scores[t] > max ? scores[t] : max;
  }
  float sum = 0.0f;
  for (int64_t t = 0; t <= pos; ++t) {
    scores[t] = fast_expf(scores[t] - max);
    sum += scores[t];
  }
  for (int64_t d = 0; d < D; ++d) out[d] = 0.0f;
  for (int64_t t = 0; t <= pos; ++t) {
    const float p = scores[t];
    const float* vt = vc + t * D;
    for (int64_t d = 0; d < D; ++d) out[d] += p * vt[d];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}
FASTDECODE_DISPATCH(void, attend_one_head,
                    (const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const float* k_cache, const float* v_cache,
                     float* scores, float* out),
                    (qkv, rope, pos, h, s, k_cache, v_cache, scores, out))

}  // namespace fastdecode::kernels
