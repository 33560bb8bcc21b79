// The eight float lanes of an AVX2 register summed in one fixed order (the halves, then
// pairs), for the x86 kernels that reduce ymm accumulators: the same order everywhere, so a
// reduction never depends on which kernel ran it. Include only under FASTDECODE_X86_CLONES.
#pragma once

#include <immintrin.h>

namespace fastdecode::kernels {

__attribute__((target("avx2"), always_inline)) inline float sum_lanes(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 0x55)));
}

}  // namespace fastdecode::kernels
