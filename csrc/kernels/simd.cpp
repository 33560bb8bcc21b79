#include "kernels/simd.h"

#include <cstdlib>

namespace fastdecode::kernels {

namespace {

// The best path, then every one below it that this CPU and build can run.
Isa best_isa() {
#if FASTDECODE_X86_CLONES
  __builtin_cpu_init();
  // x86-64-v4 = AVX-512 F/BW/CD/DQ/VL; x86-64-v3 = AVX2 + FMA + BMI (+ F16C, MOVBE).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd")) {
    return Isa::avx512;
  }
  // (F16C: the fp16 KV caches' conversions, decode_attention.cpp)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return Isa::avx2;
  }
  return Isa::scalar;
#elif defined(__aarch64__)
  return Isa::neon;
#else
  return Isa::scalar;
#endif
}

bool runs(Isa isa) {
  const Isa best = best_isa();
  if (isa == best || isa == Isa::scalar) return true;
  return best == Isa::avx512 && isa == Isa::avx2;
}

struct Selection {
  Isa isa;
  std::string error;
};

Selection select() {
  const Isa best = best_isa();
  const char* env = std::getenv("FASTDECODE_ISA");
  if (env == nullptr || *env == '\0') return {best, ""};
  const std::string name(env);
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::neon, Isa::scalar}) {
    if (name != isa_name(isa)) continue;
    if (runs(isa)) return {isa, ""};
    return {best, "FASTDECODE_ISA=" + name + ": this CPU or build cannot run that kernel path "
                  "(it runs: " + supported_isas() + ")"};
  }
  return {best, "FASTDECODE_ISA=" + name + " is not a kernel path: use one of " +
                    supported_isas() + " (or unset it for the best)"};
}

const Selection& selection() {
  static const Selection chosen = select();
  return chosen;
}

}  // namespace

Isa selected_isa() { return selection().isa; }

const std::string& isa_override_error() { return selection().error; }

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    default: return "scalar";
  }
}

std::string compiled_isas() {
#if FASTDECODE_X86_CLONES
  return "avx512,avx2,scalar";
#elif defined(__aarch64__)
  return "neon";
#else
  return "scalar";
#endif
}

std::string supported_isas() {
  std::string out;
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::neon, Isa::scalar}) {
    if (!runs(isa)) continue;
    out += (out.empty() ? "" : ",") + isa_name(isa);
  }
  return out;
}

std::string active_isa() { return isa_name(selected_isa()); }

bool cpu_has_avx512_vnni() {
#if FASTDECODE_X86_CLONES
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace fastdecode::kernels
