#include "kernels/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define FASTDECODE_PAUSE() _mm_pause()
#else
#define FASTDECODE_PAUSE() std::this_thread::yield()
#endif

namespace fastdecode::kernels {
namespace {

using Clock = std::chrono::steady_clock;
// How long an idle helper spins for the next loop before sleeping, and how long the caller
// spins for claimed chunks before yielding its core to the thread that holds them.
constexpr auto kSpin = std::chrono::microseconds(50);

// Chunks are claimed through one 64-bit word, [tag:24 | back:20 | front:20]: the caller
// takes chunks from the front, helpers from the back, so on an idle machine each thread
// streams one contiguous part of the weights (as a static split would) and a helper that
// never runs leaves its part to the caller. A helper that wakes late for a loop that has
// ended (or whose fields the caller is rewriting) sees another tag or no chunk left and
// claims nothing; a claim it wins is for a loop that cannot end before that chunk is done,
// so the loop's fields stay valid for it.
constexpr uint64_t kChunkBits = 20, kChunkMask = (uint64_t{1} << kChunkBits) - 1;

class Pool {
 public:
  // Runs the loop if the helpers are free (true), else returns false at once.
  bool run(int64_t n, int64_t grain, int threads,
           const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure_helpers(threads - 1);
    const int64_t min_grain = (n + static_cast<int64_t>(kChunkMask) - 1) /
                              static_cast<int64_t>(kChunkMask);
    grain = std::max(grain, min_grain);
    const int64_t chunks = (n + grain - 1) / grain;
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    done_.store(0, std::memory_order_relaxed);
    wanted_.store(threads - 1, std::memory_order_relaxed);
    tag_ = (tag_ + 1) & 0xffffff;
    claim_.store((tag_ << (2 * kChunkBits)) | (static_cast<uint64_t>(chunks) << kChunkBits),
                 std::memory_order_release);  // front 0, back = chunks
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work(tag_, /*from_front=*/true);
    const auto start = Clock::now();
    for (int spins = 0; done_.load(std::memory_order_acquire) < chunks; ++spins) {
      // the clock is read every 64 pauses (a read costs about as much as the wait itself)
      if (spins % 64 != 63 || Clock::now() - start < kSpin) {
        FASTDECODE_PAUSE();
      } else {
        std::this_thread::yield();  // let a descheduled helper finish its chunk
      }
    }
    return true;
  }

 private:
  void work(uint64_t tag, bool from_front) {
    uint64_t v = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((v >> (2 * kChunkBits)) != tag) return;
      const uint64_t front = v & kChunkMask, back = (v >> kChunkBits) & kChunkMask;
      if (front >= back) return;
      const uint64_t chunk = from_front ? front : back - 1;
      const uint64_t claimed = from_front ? v + 1 : v - (uint64_t{1} << kChunkBits);
      if (!claim_.compare_exchange_weak(v, claimed, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;  // v now holds the current word
      }
      const int64_t begin = static_cast<int64_t>(chunk) * grain_;
      (*fn_)(begin, std::min(n_, begin + grain_));
      done_.fetch_add(1, std::memory_order_release);
      v = claim_.load(std::memory_order_acquire);
    }
  }

  void ensure_helpers(int wanted) {
    while (static_cast<int>(helpers_.size()) < wanted) {
      const int index = static_cast<int>(helpers_.size());
      helpers_.emplace_back([this, index] { helper(index); });
      helpers_.back().detach();  // kept for the process; never joined at exit
    }
  }

  void helper(int index) {
    uint64_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      // wait for a new loop: spin, then sleep
      const auto start = Clock::now();
      uint64_t now;
      for (int spins = 0; (now = generation_.load(std::memory_order_acquire)) == seen; ++spins) {
        if (spins % 64 != 63 || Clock::now() - start < kSpin) {
          FASTDECODE_PAUSE();
          continue;
        }
        std::unique_lock<std::mutex> lock(wake_mutex_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      }
      seen = now;
      if (index >= wanted_.load(std::memory_order_relaxed)) continue;  // fewer threads asked
      work(claim_.load(std::memory_order_acquire) >> (2 * kChunkBits), /*from_front=*/false);
    }
  }

  std::mutex busy_;
  std::vector<std::thread> helpers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  uint64_t tag_ = 0;                 // written by the caller only
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> wanted_{0}, sleepers_{0};
  std::atomic<uint64_t> generation_{0};
  std::mutex wake_mutex_;
  std::condition_variable wake_;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: helpers may outlive static destructors
  return *p;
}

}  // namespace

void parallel_chunks(int64_t n, int64_t grain, int threads,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (threads <= 1 || n <= grain || !pool().run(n, grain, threads, fn)) fn(0, n);
}

}  // namespace fastdecode::kernels
