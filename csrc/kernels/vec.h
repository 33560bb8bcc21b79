// 16-lane vectors for the sampling kernels, used where the auto-vectoriser gives up
// (reductions that carry an index, selects). A vf16 is two 8-lane GCC/Clang vector-extension
// halves: one ymm each in the AVX2 and AVX-512 clones, two xmm in the SSE2 default, two NEON
// pairs on aarch64. A single 64-byte extension vector would be one zmm on AVX-512, but GCC 12
// lowers its compares and selects in the AVX2 clone through the stack, lane by lane: a
// 128k-entry argmax took 740 us that way against 15 us with two halves.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdecode::kernels {

#define FASTDECODE_VEC_INLINE inline __attribute__((always_inline))

typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

struct vf16 {
  vf8 lo, hi;
  FASTDECODE_VEC_INLINE float operator[](int lane) const { return lane < 8 ? lo[lane] : hi[lane - 8]; }
};

// Comparison masks: every bit of a lane set where true (as the vector extensions give them).
struct vi16 {
  vi8 lo, hi;
  FASTDECODE_VEC_INLINE int32_t operator[](int lane) const {
    return lane < 8 ? lo[lane] : hi[lane - 8];
  }
};

FASTDECODE_VEC_INLINE vf16 load16(const float* p) {
  vf16 v;
  std::memcpy(&v.lo, p, sizeof(v.lo));
  std::memcpy(&v.hi, p + 8, sizeof(v.hi));
  return v;
}

FASTDECODE_VEC_INLINE void store16(float* p, vf16 v) {
  std::memcpy(p, &v.lo, sizeof(v.lo));
  std::memcpy(p + 8, &v.hi, sizeof(v.hi));
}

FASTDECODE_VEC_INLINE vf16 splat16(float x) { return {vf8{} + x, vf8{} + x}; }
FASTDECODE_VEC_INLINE vi16 splat16i(int32_t x) { return {vi8{} + x, vi8{} + x}; }

FASTDECODE_VEC_INLINE vi16 operator>(vf16 a, vf16 b) { return {a.lo > b.lo, a.hi > b.hi}; }
FASTDECODE_VEC_INLINE vi16 operator>=(vf16 a, vf16 b) { return {a.lo >= b.lo, a.hi >= b.hi}; }
FASTDECODE_VEC_INLINE vi16 operator!=(vf16 a, vf16 b) { return {a.lo != b.lo, a.hi != b.hi}; }
FASTDECODE_VEC_INLINE vf16& operator+=(vf16& a, vf16 b) {
  a.lo += b.lo;
  a.hi += b.hi;
  return a;
}
FASTDECODE_VEC_INLINE vf16 operator*(vf16 a, vf16 b) { return {a.lo * b.lo, a.hi * b.hi}; }
// a * b + c (one FMA per half where the path has FMA: floating contraction is on)
FASTDECODE_VEC_INLINE vf16 madd16(vf16 a, vf16 b, vf16 c) {
  return {a.lo * b.lo + c.lo, a.hi * b.hi + c.hi};
}
FASTDECODE_VEC_INLINE vi16& operator+=(vi16& a, vi16 b) {
  a.lo += b.lo;
  a.hi += b.hi;
  return a;
}
FASTDECODE_VEC_INLINE vi16& operator|=(vi16& a, vi16 b) {
  a.lo |= b.lo;
  a.hi |= b.hi;
  return a;
}

// Lane-wise mask ? a : b.
FASTDECODE_VEC_INLINE vf16 select16(vi16 mask, vf16 a, vf16 b) {
  return {mask.lo ? a.lo : b.lo, mask.hi ? a.hi : b.hi};
}
FASTDECODE_VEC_INLINE vi16 select16(vi16 mask, vi16 a, vi16 b) {
  return {mask.lo ? a.lo : b.lo, mask.hi ? a.hi : b.hi};
}

// True when any lane of a comparison mask is set.
FASTDECODE_VEC_INLINE bool any16(vi16 mask) {
  const vi8 m = mask.lo | mask.hi;
  uint64_t w[4];
  std::memcpy(w, &m, sizeof(w));
  return ((w[0] | w[1]) | (w[2] | w[3])) != 0;
}

}  // namespace fastdecode::kernels
