// Run-time ISA choice for the torch-free kernels.
//
// FASTDECODE_MULTIVERSION marks a hot function so that GCC/Clang emit one clone per listed
// ISA plus a portable default, and pick one through an ifunc resolver when the library is
// loaded. The loops inside are written in a lane-parallel style (kLanes independent
// accumulators) that the compiler vectorises at -O3 for each clone's vector width.
// Elsewhere (aarch64, other compilers) the macro is empty: NEON is part of the aarch64
// baseline, so the default build already vectorises the same loops.
#pragma once

#include <cstdint>
#include <string>

// FASTDECODE_PORTABLE_ONLY builds only the portable path (the Catch2 suite builds the kernels
// both ways so that the fallback is tested on machines whose CPU would pick a clone).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__) && defined(__ELF__) && \
    !defined(FASTDECODE_PORTABLE_ONLY)
#define FASTDECODE_X86_CLONES 1
#define FASTDECODE_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTDECODE_X86_CLONES 0
#define FASTDECODE_MULTIVERSION
#endif

namespace fastdecode::kernels {

// Number of independent accumulators in reductions: 16 fp32 values = one AVX-512 register,
// two AVX2 registers, four NEON registers.
constexpr int kLanes = 16;

// Vector ISA families compiled into this build, e.g. "avx512,avx2,scalar" or "neon".
std::string compiled_isas();
// The clone the loader picks on this CPU: "avx512", "avx2", "neon" or "scalar".
std::string active_isa();

}  // namespace fastdecode::kernels
