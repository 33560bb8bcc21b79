// Counter-based random numbers for the sampling kernels: every (key, row, index) maps to an
// independent value through a hash, so rows and indices can be drawn in any order, in
// parallel and vectorised, from one 64-bit key taken from the caller's torch.Generator.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdecode::kernels {

// Forced inlining: these are called from target_clones functions, and GCC does not inline a
// plain `inline` function into a clone of a different target on its own.
#define FASTDECODE_INLINE inline __attribute__((always_inline))

// 32-bit avalanche hash (xor-shift-multiply; constants from Wellons' "lowbias32" search).
FASTDECODE_INLINE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Uniform 32-bit value for (key, row, index): two hash rounds, the row folded in between.
FASTDECODE_INLINE uint32_t counter_random(uint64_t key, uint32_t row, uint32_t index) {
  const uint32_t k0 = static_cast<uint32_t>(key);
  const uint32_t k1 = static_cast<uint32_t>(key >> 32);
  return mix32(mix32(index ^ k0) ^ (k1 + row * 0x9e3779b9u));
}

// Natural log for x in (0, 1] (normal floats), branch-free: x = m * 2^e with
// m in [sqrt(1/2), sqrt(2)), log(1 + f) by a degree-9 polynomial (Cephes coefficients).
// Max relative error about 2 ulp.
FASTDECODE_INLINE float fast_logf(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(static_cast<int32_t>((bits >> 23) & 0xffu) - 126);
  const uint32_t mbits = (bits & 0x007fffffu) | 0x3f000000u;  // mantissa scaled to [0.5, 1)
  float m;
  std::memcpy(&m, &mbits, sizeof(m));
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  const float f = low ? m + m - 1.0f : m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

// Exp(1) draw from 32 random bits: E = -log(1 - w), w uniform in (0, 1). Small w (short
// waits, the ones that decide an exponential race) use the series of -log1p(-w), so their
// resolution is that of w itself (2^-32 near 0), not of 1 - w.
FASTDECODE_INLINE float exponential_from_bits(uint32_t bits) {
  // 31 bits through a signed conversion (vectorises on every ISA; unsigned does not on AVX2)
  const float w = static_cast<float>(static_cast<int32_t>(bits >> 1)) * 4.656612873077393e-10f +
                  2.3283064365386963e-10f;
  const float series = w * (1.0f + w * (0.5f + w * (0.33333333f + w * (0.25f + w * 0.2f))));
  const float one_minus = 1.0f - w;
  const float logged = -fast_logf(one_minus > 0.0f ? one_minus : 1.1920929e-07f);
  return w < 0.0078125f ? series : logged;
}

}  // namespace fastdecode::kernels
