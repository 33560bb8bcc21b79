#include "kernels/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/fast_exp.h"
#include "kernels/sampling.h"
#include "kernels/simd.h"
#include "kernels/vec.h"

namespace fastdecode::kernels {

namespace {
// Positions whose scores are computed and reduced together (pair_sums' tree spells out 8).
constexpr int kBlock = 8;

// Cache lines [p, min(p + count, end)) requested ahead of their use (count elements).
template <typename T>
inline void prefetch_rows(const T* p, const T* end, int64_t count) {
  const T* stop = std::min(p + count, end);
  for (; p < stop; p += 64 / sizeof(T)) __builtin_prefetch(p);
}

// Lanes 0-3: x's neighbouring pairs summed (x0 + x1, x2 + x3, ...), lanes 4-7: y's.
FASTDECODE_VEC_INLINE vf8 pair_sums(vf8 x, vf8 y) {
  return __builtin_shufflevector(x, y, 0, 2, 4, 6, 8, 10, 12, 14) +
         __builtin_shufflevector(x, y, 1, 3, 5, 7, 9, 11, 13, 15);
}

// fp16 cache elements (IEEE binary16 bits) widened to float, and floats rounded to them (to
// nearest, ties to even). kF16C: F16C's vcvtph2ps / vcvtps2ph, 8 values an instruction (the
// AVX2 and AVX-512 clones); otherwise _Float16 conversions, which GCC 12 lowers lane by lane
// without AVX512-FP16 (exact: libgcc's software conversions on the x86-64 baseline, the
// hardware's on aarch64). Both give the same bits.
typedef _Float16 vh8 __attribute__((vector_size(16)));
typedef uint16_t vu8 __attribute__((vector_size(16)));

FASTDECODE_VEC_INLINE float to_float(float x) { return x; }
FASTDECODE_VEC_INLINE float to_float(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof(h));
  return static_cast<float>(h);
}

#if FASTDECODE_X86_CLONES
// F16C's conversions as asm: an intrinsic (or any function with a target attribute) cannot be
// inlined through the always-inline bodies, which carry no target of their own; these are
// only reached from the AVX2 and AVX-512 clones (kF16C), which simd.cpp selects only where
// the CPU has F16C (x86-64-v3 and v4 include it).
FASTDECODE_VEC_INLINE vf8 widen8_f16c(const uint16_t* p) {
  vf8 out;
  vu8 in;
  std::memcpy(&in, p, sizeof(in));
  asm("vcvtph2ps %1, %0" : "=x"(out) : "x"(in));
  return out;
}
FASTDECODE_VEC_INLINE void narrow8_f16c(vf8 v, uint16_t* p) {
  vu8 out;
  asm("vcvtps2ph $0, %1, %0" : "=x"(out) : "x"(v));  // imm 0: to nearest, ties to even
  std::memcpy(p, &out, sizeof(out));
}
#endif

template <bool kF16C>
FASTDECODE_VEC_INLINE vf8 widen8(const uint16_t* p) {
#if FASTDECODE_X86_CLONES
  if constexpr (kF16C) return widen8_f16c(p);
#endif
  vu8 u;
  std::memcpy(&u, p, sizeof(u));
  return __builtin_convertvector(reinterpret_cast<vh8>(u), vf8);
}

template <bool kF16C>
FASTDECODE_VEC_INLINE void narrow8(vf8 v, uint16_t* p) {
#if FASTDECODE_X86_CLONES
  if constexpr (kF16C) return narrow8_f16c(v, p);
#endif
  const vu8 u = reinterpret_cast<vu8>(__builtin_convertvector(v, vh8));
  std::memcpy(p, &u, sizeof(u));
}

// 16 cache values as floats: fp32 loaded, fp16 widened.
template <bool kF16C>
FASTDECODE_VEC_INLINE vf16 load16(const float* p) {
  return ::fastdecode::kernels::load16(p);
}
template <bool kF16C>
FASTDECODE_VEC_INLINE vf16 load16(const uint16_t* p) {
  return {widen8<kF16C>(p), widen8<kF16C>(p + 8)};
}

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

// n floats rounded to fp16 bits (8 at a time, the rest one by one: the same rounding).
template <bool kF16C>
FASTDECODE_KERNEL_BODY void round_to_half_body(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vf8 v;
    std::memcpy(&v, x + i, sizeof(v));
    narrow8<kF16C>(v, out + i);
  }
  for (; i < n; ++i) {
    const _Float16 h = static_cast<_Float16>(x[i]);
    std::memcpy(out + i, &h, sizeof(h));
  }
}
FASTDECODE_DISPATCH_F16C(void, round_to_half, (const float* x, int64_t n, uint16_t* out),
                         (x, n, out))

namespace {
// n cache values from floats: copied into an fp32 cache, rounded into an fp16 one.
void store_values(const float* x, int64_t n, float* out) {
  std::memcpy(out, x, n * sizeof(float));
}
void store_values(const float* x, int64_t n, uint16_t* out) { round_to_half(x, n, out); }

// Both caches' writes: the rotated key and the value in fp32, then stored (an fp16 cache
// holds exactly the fp32 cache's values rounded).
template <typename T>
void write_rotated_kv_as(const float* qkv, const float* rope, int64_t pos,
                         const DecodeAttentionShape& s, T* k_cache, T* v_cache) {
  const int64_t D = s.head_dim;
  const float* k = qkv + s.n_head * D;
  const float* v = k + s.n_kv_head * D;
  float rotated[512];  // D <= 512 is checked by the caller
  for (int64_t hk = 0; hk < s.n_kv_head; ++hk) {
    rotate(k + hk * D, rope, D, rotated);
    store_values(rotated, D, k_cache + (hk * s.cache_len + pos) * D);
    store_values(v + hk * D, D, v_cache + (hk * s.cache_len + pos) * D);
  }
}
}  // namespace

void write_rotated_kv(const float* qkv, const float* rope, int64_t pos,
                      const DecodeAttentionShape& s, float* k_cache, float* v_cache) {
  write_rotated_kv_as(qkv, rope, pos, s, k_cache, v_cache);
}

void write_rotated_kv(const float* qkv, const float* rope, int64_t pos,
                      const DecodeAttentionShape& s, uint16_t* k_cache, uint16_t* v_cache) {
  write_rotated_kv_as(qkv, rope, pos, s, k_cache, v_cache);
}

// T: the caches' element, float or uint16_t (fp16 bits; load16 and to_float widen them, with
// F16C where kF16C).
template <typename T, bool kF16C = false>
FASTDECODE_KERNEL_BODY
void attend_one_head_body(const float* qkv, const float* rope, int64_t pos, int64_t h,
                          const DecodeAttentionShape& s, const T* k_cache, const T* v_cache,
                          float* scores, float* out) {
  const int64_t D = s.head_dim;
  const int64_t hk = h / (s.n_head / s.n_kv_head);
  const T* kc = k_cache + hk * s.cache_len * D;
  const T* vc = v_cache + hk * s.cache_len * D;
  float q[512];  // D <= 512 is checked by the caller
  rotate(qkv + h * D, rope, D, q);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t n = pos + 1;  // positions attended
  const int64_t d_full = D - D % kLanes;
  // Scores, kBlock positions at a time: per position, 16 partial sums of q . k in one vector
  // (four positions' multiply-adds independent, so they overlap), folded to 8 lanes; then
  // the block's eight vectors reduced together by pair_sums, three shuffle-and-add levels
  // that leave the eight sums in one vector. (Summing each position's lanes one by one, in
  // order, was 15 dependent adds a position; this tree made a batch-8 step of the default
  // GGUF at 32-96 positions ~12% faster, interleaved A/B.) Each position's sum is a fixed
  // tree of its own lanes, never mixed with another position's: a score depends on q, its
  // key and D alone, whatever the block, the row or the batch. Another order moves the
  // last bits, and under 8-bit activations a quantized model's logits then move as much as
  // the activation rounding moves them (test_quantized_model bounds both).
  // a position's partial sums, folded to 8 lanes; four_positions: the same for key rows
  // k0 + j * D (j < 4) side by side, each with the same adds in the same order
  // (always inlined, as the helpers: the F16C asm needs the clone's target around it)
  auto one_position = [&](const T* k, vf8* v) __attribute__((always_inline)) {
    vf16 a = splat16(0.0f);
    for (int64_t d = 0; d < d_full; d += kLanes) {
      a = madd16(load16(q + d), load16<kF16C>(k + d), a);
    }
    *v = a.lo + a.hi;
  };
  auto four_positions = [&](const T* k0, vf8* v) __attribute__((always_inline)) {
    vf16 a0 = splat16(0.0f), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t d = 0; d < d_full; d += kLanes) {
      const vf16 qd = load16(q + d);
      a0 = madd16(qd, load16<kF16C>(k0 + d), a0);
      a1 = madd16(qd, load16<kF16C>(k0 + D + d), a1);
      a2 = madd16(qd, load16<kF16C>(k0 + 2 * D + d), a2);
      a3 = madd16(qd, load16<kF16C>(k0 + 3 * D + d), a3);
    }
    v[0] = a0.lo + a0.hi;
    v[1] = a1.lo + a1.hi;
    v[2] = a2.lo + a2.hi;
    v[3] = a3.lo + a3.hi;
  };
  for (int64_t t = 0; t < n; t += kBlock) {
    const int64_t in_block = std::min<int64_t>(kBlock, n - t);
    const T* kt = kc + t * D;
    // the cache rows stream from L3 or memory (a batch-8 step at 64 positions reads ~24 MB
    // of them): the keys two blocks ahead, and the values the value pass will read (a
    // second prefetch there, 16 positions ahead, measured no faster: dropped)
    prefetch_rows(kt + 2 * kBlock * D, kc + n * D, kBlock * D);
    prefetch_rows(vc + t * D, vc + n * D, kBlock * D);
    vf8 v[kBlock];
    if (in_block == kBlock) {
      four_positions(kt, v);
      four_positions(kt + 4 * D, v + 4);
    } else {  // the last, partial block: no key past the last position is read
      for (int j = 0; j < kBlock; ++j) {
        v[j] = vf8{};
        if (j < in_block) one_position(kt + j * D, v + j);
      }
    }
    const vf8 sums = pair_sums(pair_sums(pair_sums(v[0], v[1]), pair_sums(v[2], v[3])),
                               pair_sums(pair_sums(v[4], v[5]), pair_sums(v[6], v[7])));
    for (int j = 0; j < in_block; ++j) {
      float dot = sums[j];
      // (the tails fused explicitly: left to contraction, GCC fused them in the fp32 body
      // and not always in the fp16 one, whose outputs then moved by an ulp)
      for (int64_t d = d_full; d < D; ++d) dot = std::fma(q[d], to_float(kt[j * D + d]), dot);
      scores[t + j] = dot * scale;
    }
  }
  // softmax: the largest non-NaN score (exact in any order), the sampler's vectorised pass
  const float max = row_max(scores, n).value;
  int64_t t;
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
      const T* vt = vc + t * D + d;
      a0 = madd16(p, load16<kF16C>(vt), a0);
      a1 = madd16(p, load16<kF16C>(vt + kLanes), a1);
      a2 = madd16(p, load16<kF16C>(vt + 2 * kLanes), a2);
      a3 = madd16(p, load16<kF16C>(vt + 3 * kLanes), a3);
    }
    const vf16 scale_out = splat16(inv);
    store16(out + d, a0 * scale_out);
    store16(out + d + kLanes, a1 * scale_out);
    store16(out + d + 2 * kLanes, a2 * scale_out);
    store16(out + d + 3 * kLanes, a3 * scale_out);
  }
  for (; d < d_full; d += kLanes) {
    vf16 a = splat16(0.0f);
    for (t = 0; t < n; ++t) a = madd16(splat16(scores[t]), load16<kF16C>(vc + t * D + d), a);
    store16(out + d, a * splat16(inv));
  }
  for (; d < D; ++d) {
    float acc = 0.0f;
    for (t = 0; t < n; ++t) acc = std::fma(scores[t], to_float(vc[t * D + d]), acc);
    out[d] = acc * inv;
  }
}
FASTDECODE_DISPATCH(void, attend_one_head,
                    (const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const float* k_cache, const float* v_cache,
                     float* scores, float* out),
                    (qkv, rope, pos, h, s, k_cache, v_cache, scores, out))

template <bool kF16C>
FASTDECODE_KERNEL_BODY void attend_one_head_half_body(
    const float* qkv, const float* rope, int64_t pos, int64_t h, const DecodeAttentionShape& s,
    const uint16_t* k_cache, const uint16_t* v_cache, float* scores, float* out) {
  attend_one_head_body<uint16_t, kF16C>(qkv, rope, pos, h, s, k_cache, v_cache, scores, out);
}
FASTDECODE_DISPATCH_F16C(void, attend_one_head_half,
                         (const float* qkv, const float* rope, int64_t pos, int64_t h,
                          const DecodeAttentionShape& s, const uint16_t* k_cache,
                          const uint16_t* v_cache, float* scores, float* out),
                         (qkv, rope, pos, h, s, k_cache, v_cache, scores, out))
void attend_one_head(const float* qkv, const float* rope, int64_t pos, int64_t h,
                     const DecodeAttentionShape& s, const uint16_t* k_cache,
                     const uint16_t* v_cache, float* scores, float* out) {
  attend_one_head_half(qkv, rope, pos, h, s, k_cache, v_cache, scores, out);
}

}  // namespace fastdecode::kernels
