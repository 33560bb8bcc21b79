// parallel_chunks: every index exactly once whatever the sizes and thread counts, across many
// back-to-back loops (late helpers must not touch the next loop), nested and concurrent
// callers (which run serially instead of waiting).
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "kernels/parallel.h"

using fastdecode::kernels::parallel_chunks;

namespace {

bool each_index_once(int64_t n, int64_t grain, int threads) {
  std::vector<std::atomic<int>> hits(n);
  for (auto& h : hits) h.store(0);
  parallel_chunks(n, grain, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  for (auto& h : hits) {
    if (h.load() != 1) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("parallel_chunks covers each index once", "[parallel]") {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t n : {0, 1, 7, 64, 1000, 4099}) {
      for (int64_t grain : {1, 3, 64, 5000}) REQUIRE(each_index_once(n, grain, threads));
    }
  }
}

TEST_CASE("back-to-back loops never mix", "[parallel]") {
  std::vector<int64_t> sums(2000);
  for (size_t loop = 0; loop < sums.size(); ++loop) {
    std::atomic<int64_t> sum{0};
    const int64_t n = 1 + static_cast<int64_t>(loop % 97);
    parallel_chunks(n, 1 + static_cast<int64_t>(loop % 5), 2, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i + static_cast<int64_t>(loop));
    });
    REQUIRE(sum.load() == n * (n - 1) / 2 + n * static_cast<int64_t>(loop));
  }
}

TEST_CASE("nested and concurrent callers run serially and correctly", "[parallel]") {
  std::atomic<int64_t> inner{0};
  parallel_chunks(8, 1, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      parallel_chunks(10, 2, 2, [&](int64_t bb, int64_t ee) { inner.fetch_add(ee - bb); });
    }
  });
  REQUIRE(inner.load() == 80);
  std::vector<std::thread> callers;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int r = 0; r < 200; ++r) good.fetch_add(each_index_once(257, 8, 2) ? 1 : 0);
    });
  }
  for (auto& c : callers) c.join();
  REQUIRE(good.load() == 800);
}
