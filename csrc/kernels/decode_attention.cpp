#include "kernels/decode_attention.h"

#include <cmath>
#include <vector>

#include "kernels/fast_exp.h"
#include "kernels/sampling.h"
#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

namespace {
// Positions whose dot products (and value products) run side by side.
constexpr int kBlock = 4;  // (the loop below spells out four)

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
  const int64_t n = pos + 1;  // positions attended
  const int64_t d_full = D - D % kLanes;
  // Scores, kBlock positions at a time: 16 partial sums per position in one vector, the
  // positions' chains independent so that their multiply-adds overlap. (One position at a
  // time was a chain of dependent adds per position: a quarter of a batch-8 decode step at
  // a few hundred positions.) Every sum below keeps the order of the plain loops (lanes,
  // then positions, in order), so the output is bit for bit that of one position at a time:
  // under 8-bit activations the quantized models' greedy text moves with the last bit of
  // an attention output.
  int64_t t = 0;
  for (; t + kBlock <= n; t += kBlock) {
    const float* k0 = kc + t * D;
    vf16 a0 = splat16(0.0f), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t d = 0; d < d_full; d += kLanes) {
      const vf16 qd = load16(q + d);
      a0 = madd16(qd, load16(k0 + d), a0);
      a1 = madd16(qd, load16(k0 + D + d), a1);
      a2 = madd16(qd, load16(k0 + 2 * D + d), a2);
      a3 = madd16(qd, load16(k0 + 3 * D + d), a3);
    }
    float dot[kBlock] = {sum16_in_order(a0), sum16_in_order(a1), sum16_in_order(a2),
                         sum16_in_order(a3)};
    for (int j = 0; j < kBlock; ++j) {
      for (int64_t d = d_full; d < D; ++d) dot[j] += q[d] * k0[j * D + d];
      scores[t + j] = dot[j] * scale;
    }
  }
  for (; t < n; ++t) {
    vf16 a = splat16(0.0f);
    for (int64_t d = 0; d < d_full; d += kLanes) {
      a = madd16(load16(q + d), load16(kc + t * D + d), a);
    }
    float dot = sum16_in_order(a);
    for (int64_t d = d_full; d < D; ++d) dot += q[d] * kc[t * D + d];
    scores[t] = dot * scale;
  }
  // softmax: the largest non-NaN score (exact in any order), the sampler's vectorised pass
  const float max = row_max(scores, n).value;
  for (t = 0; t < n; ++t) scores[t] = fast_expf(scores[t] - max);
  float sum = 0.0f;
  for (t = 0; t < n; ++t) sum += scores[t];
  const float inv = 1.0f / sum;
  // out = scores . v: 64 output columns (four 16-lane sums) held in registers across the
  // positions, instead of a store and reload of out per position
  int64_t d = 0;
  for (; d + 4 * kLanes <= d_full; d += 4 * kLanes) {
    vf16 a0 = splat16(0.0f), a1 = a0, a2 = a0, a3 = a0;
    for (t = 0; t < n; ++t) {
      const vf16 p = splat16(scores[t]);
      const float* vt = vc + t * D + d;
      a0 = madd16(p, load16(vt), a0);
      a1 = madd16(p, load16(vt + kLanes), a1);
      a2 = madd16(p, load16(vt + 2 * kLanes), a2);
      a3 = madd16(p, load16(vt + 3 * kLanes), a3);
    }
    const vf16 scale_out = splat16(inv);
    store16(out + d, a0 * scale_out);
    store16(out + d + kLanes, a1 * scale_out);
    store16(out + d + 2 * kLanes, a2 * scale_out);
    store16(out + d + 3 * kLanes, a3 * scale_out);
  }
  for (; d < d_full; d += kLanes) {
    vf16 a = splat16(0.0f);
    for (t = 0; t < n; ++t) a = madd16(splat16(scores[t]), load16(vc + t * D + d), a);
    store16(out + d, a * splat16(inv));
  }
  for (; d < D; ++d) {
    float acc = 0.0f;
    for (t = 0; t < n; ++t) acc += scores[t] * vc[t * D + d];
    out[d] = acc * inv;
  }
}
FASTDECODE_DISPATCH(void, attend_one_head,
                    (const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const float* k_cache, const float* v_cache,
                     float* scores, float* out),
                    (qkv, rope, pos, h, s, k_cache, v_cache, scores, out))

}  // namespace fastdecode::kernels
