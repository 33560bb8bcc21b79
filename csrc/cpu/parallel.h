// The CPU ops' parallel loop on the decode path: kernels::parallel_chunks (chunks claimed
// dynamically, the caller never waits for a descheduled thread) with torch's thread count
// (torch.set_num_threads), instead of at::parallel_for, whose static OpenMP split stalls
// when another process holds a core (csrc/kernels/parallel.h). The OpenMP loop stays
// selectable for side-by-side measurements (fastdecode._C.set_parallel_loop).
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <functional>

#include "kernels/parallel.h"

namespace fastdecode::cpu {

inline std::atomic<bool>& use_openmp_loop() {
  static std::atomic<bool> flag{false};
  return flag;
}

// fn(begin, end) over [0, n) in chunks of at most `grain`.
inline void parallel_for(int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& fn) {
  if (use_openmp_loop().load(std::memory_order_relaxed)) {
    at::parallel_for(0, n, grain, fn);
  } else {
    kernels::parallel_chunks(n, grain, at::get_num_threads(), fn);
  }
}

}  // namespace fastdecode::cpu
