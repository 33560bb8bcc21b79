// Walks the activation rows of a batched GEMV in blocks whose size is a compile-time
// constant, so a tile kernel keeps each block's accumulators in registers and loads each
// weight once per block of rows. Every row's arithmetic is the same whatever block it falls
// in (a tile kernel loops over the rows of a block without mixing them), so the row count
// of a step never changes a row's result.
#pragma once

#include <cstdint>
#include <type_traits>

namespace fastdecode::kernels {

// fn(m0, mb, one_block) over rows [0, M) in blocks of kMax, then halves down to 1 rows
// (kMax a power of two): mb and one_block are std::integral_constants, the kernel's row
// block and whether a weight group is a single 32-value block (G == 32: each block's sum
// goes straight into the accumulator).
template <int kMax, typename Fn>
inline void for_row_blocks(int64_t M, bool one_block, const Fn& fn) {
  static_assert(kMax >= 1 && (kMax & (kMax - 1)) == 0, "a power of two");
  auto blocks = [&](auto ob) {
    int64_t m0 = 0;
    auto step = [&](auto mb) {
      for (; m0 + mb.value <= M; m0 += mb.value) fn(m0, mb, ob);
    };
    step(std::integral_constant<int, kMax>{});
    if constexpr (kMax >= 8) step(std::integral_constant<int, 4>{});
    if constexpr (kMax >= 4) step(std::integral_constant<int, 2>{});
    if constexpr (kMax >= 2) step(std::integral_constant<int, 1>{});
  };
  if (one_block) {
    blocks(std::true_type{});
  } else {
    blocks(std::false_type{});
  }
}

}  // namespace fastdecode::kernels
