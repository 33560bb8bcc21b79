// Run-time ISA choice for the torch-free kernels.
//
// A hot kernel is written once as an always-inline body (FASTDECODE_KERNEL_BODY) in a
// lane-parallel style (kLanes independent accumulators) that the compiler vectorises at -O3;
// FASTDECODE_DISPATCH then compiles that body three times on x86-64 (AVX-512 = x86-64-v4,
// AVX2 = x86-64-v3, and the portable baseline) and defines the kernel's public name as a
// switch on selected_isa(). The path is chosen once per process: the best the CPU runs, or
// the one named by the environment variable FASTDECODE_ISA (avx512 | avx2 | scalar), so that
// every path can be tested and measured on one machine. Elsewhere (aarch64, other compilers)
// there is one build: NEON is part of the aarch64 baseline and vectorises the same loops.
#pragma once

#include <cstdint>
#include <string>

// FASTDECODE_PORTABLE_ONLY builds only the portable path (the Catch2 suite builds the kernels
// both ways so that the fallback is tested on machines whose CPU would pick a clone).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__) && \
    !defined(FASTDECODE_PORTABLE_ONLY)
#define FASTDECODE_X86_CLONES 1
#else
#define FASTDECODE_X86_CLONES 0
#endif

namespace fastdecode::kernels {

// Number of independent accumulators in reductions: 16 fp32 values = one AVX-512 register,
// two AVX2 registers, four NEON registers.
constexpr int kLanes = 16;

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

// The kernel path of this process: FASTDECODE_ISA when it names a path this CPU runs, else
// the best one. Read once, on first use.
Isa selected_isa();
// Why FASTDECODE_ISA was not followed ("" when it was, or is unset): an unknown name, or a
// path this CPU or build lacks. The Python package refuses to load with this message.
const std::string& isa_override_error();
// "avx512", "avx2", "neon" or "scalar".
std::string isa_name(Isa isa);
// Vector ISA families compiled into this build, e.g. "avx512,avx2,scalar" or "neon".
std::string compiled_isas();
// The paths this CPU can run, best first, e.g. "avx512,avx2,scalar".
std::string supported_isas();
// The path selected_isa() runs, as a name.
std::string active_isa();
// Whether the CPU has AVX-512 VNNI (the int8 / int4 GEMV's vpdpbusd path, taken only when
// the selected path is avx512).
bool cpu_has_avx512_vnni();

}  // namespace fastdecode::kernels

#define FASTDECODE_KERNEL_BODY static inline __attribute__((always_inline))

// FASTDECODE_DISPATCH(ret, name, (params), (args)): defines `ret name(params)` running
// name_body(args) compiled for the selected path.
#if FASTDECODE_X86_CLONES
#define FASTDECODE_DISPATCH(ret, name, params, args) \
  FASTDECODE_DISPATCH_WIDTH(ret, name, params, args, "arch=x86-64-v4")
// As FASTDECODE_DISPATCH, with the AVX-512 clone vectorised in whole 512-bit registers
// (GCC's x86-64-v4 prefers 256-bit ones): for a body whose independent accumulators fill
// them without spilling (32 zmm registers).
#define FASTDECODE_DISPATCH_ZMM(ret, name, params, args) \
  FASTDECODE_DISPATCH_WIDTH(ret, name, params, args, "arch=x86-64-v4,prefer-vector-width=512")
#define FASTDECODE_DISPATCH_WIDTH(ret, name, params, args, avx512_target) \
  FASTDECODE_DISPATCH_CLONES(ret, name, params, args, avx512_target, name##_body, name##_body)
// As FASTDECODE_DISPATCH for a body templated on <bool kF16C>: true in the AVX-512 and AVX2
// clones (both have F16C, whose conversions the body may call), false on the baseline.
#define FASTDECODE_DISPATCH_F16C(ret, name, params, args)                          \
  FASTDECODE_DISPATCH_CLONES(ret, name, params, args, "arch=x86-64-v4", name##_body<true>, \
                             name##_body<false>)
// The three clones: vector_body compiled for AVX-512 (avx512_target) and AVX2, base_body
// for the baseline, and `ret name(params)` switching on selected_isa().
#define FASTDECODE_DISPATCH_CLONES(ret, name, params, args, avx512_target, vector_body,     \
                                   base_body)                                             \
  __attribute__((target(avx512_target))) static ret name##_avx512 params {                 \
    return vector_body args;                                                              \
  }                                                                                       \
  __attribute__((target("arch=x86-64-v3"))) static ret name##_avx2 params {                \
    return vector_body args;                                                              \
  }                                                                                       \
  static ret name##_scalar params { return base_body args; }                              \
  ret name params {                                                                       \
    switch (::fastdecode::kernels::selected_isa()) {                                      \
      case ::fastdecode::kernels::Isa::avx512: return name##_avx512 args;                 \
      case ::fastdecode::kernels::Isa::avx2: return name##_avx2 args;                     \
      default: return name##_scalar args;                                                 \
    }                                                                                     \
  }
#else
#define FASTDECODE_DISPATCH(ret, name, params, args) \
  ret name params { return name##_body args; }
#define FASTDECODE_DISPATCH_ZMM(ret, name, params, args) \
  FASTDECODE_DISPATCH(ret, name, params, args)
#define FASTDECODE_DISPATCH_F16C(ret, name, params, args) \
  ret name params { return name##_body<false> args; }
#endif
