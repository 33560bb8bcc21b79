// A parallel loop for the decode step's many short parallel regions (~120 GEMVs a token),
// built to stay fast when the machine is busy.
//
// OpenMP's static split gives each thread a fixed share and joins at a barrier: when the OS
// has descheduled one thread (another process holds its core), the others finish their
// shares and spin at the barrier for it. On 2 cores with one busy process, 2-thread
// decoding ran 4x slower than idle and 2x slower than 1 thread. Here the range is cut into
// chunks that threads claim from an atomic counter: the calling thread always works, helper
// threads join in when they are running, and the caller waits only for chunks a helper has
// already claimed, never for a helper that has not started. Idle helpers spin briefly (the
// next GEMV is microseconds away), then sleep.
#pragma once

#include <cstdint>
#include <functional>

namespace fastdecode::kernels {

// fn(begin, end) over [0, n) in chunks of at most `grain`, on the caller and up to
// `threads - 1` helper threads (created on first use, kept for the process). Runs
// serially when threads <= 1, when there is one chunk, or when another thread's loop is
// using the helpers (so concurrent callers never wait on each other). fn must not throw.
void parallel_chunks(int64_t n, int64_t grain, int threads,
                     const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fastdecode::kernels
