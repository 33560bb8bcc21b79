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

// Uniform double in [0, 1) with 53 random bits from two hashed values (indices 2i, 2i + 1).
FASTDECODE_INLINE double counter_uniform(uint64_t key, uint32_t row, uint32_t index) {
  const uint64_t hi = counter_random(key, row, 2 * index) >> 5;      // 27 bits
  const uint64_t lo = counter_random(key, row, 2 * index + 1) >> 6;  // 26 bits
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

}  // namespace fastdecode::kernels
