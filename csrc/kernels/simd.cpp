#include "kernels/simd.h"

namespace fastdecode::kernels {

std::string compiled_isas() {
#if FASTDECODE_X86_CLONES
  return "avx512,avx2,scalar";
#elif defined(__aarch64__)
  return "neon";
#else
  return "scalar";
#endif
}

std::string active_isa() {
#if FASTDECODE_X86_CLONES
  __builtin_cpu_init();
  // x86-64-v4 = AVX-512 F/BW/CD/DQ/VL; x86-64-v3 = AVX2 + FMA + BMI (+ F16C, MOVBE).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd")) {
    return "avx512";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "scalar";
#elif defined(__aarch64__)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace fastdecode::kernels
