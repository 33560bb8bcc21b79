// 16-lane vectors through GCC/Clang vector extensions: the compiler lowers them to one zmm
// (AVX-512 clone), two ymm (AVX2 clone), four xmm (SSE2 default) or four NEON registers.
// Used where the auto-vectoriser gives up (reductions that carry an index, selects).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdecode::kernels {

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef int8_t vs8x16 __attribute__((vector_size(16)));
typedef uint8_t vu8x16 __attribute__((vector_size(16)));

__attribute__((always_inline)) inline vf16 load16(const float* p) {
  vf16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline void store16(float* p, vf16 v) {
  std::memcpy(p, &v, sizeof(v));
}

__attribute__((always_inline)) inline float sum16(vf16 v) {
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s += v[l];
  return s;
}

__attribute__((always_inline)) inline vf16 splat16(float x) {
  return vf16{} + x;
}

__attribute__((always_inline)) inline vi16 splat16i(int32_t x) {
  return vi16{} + x;
}

// True when any lane of a comparison mask is set.
__attribute__((always_inline)) inline bool any16(vi16 mask) {
  uint64_t w[8];
  std::memcpy(w, &mask, sizeof(w));
  return ((w[0] | w[1]) | (w[2] | w[3]) | (w[4] | w[5]) | (w[6] | w[7])) != 0;
}

}  // namespace fastdecode::kernels
