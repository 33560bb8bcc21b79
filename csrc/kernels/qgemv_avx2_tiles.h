// What the AVX2 quantized GEMVs share (qgemv_avx2_int4.cpp, qgemv_avx2_int8.cpp): the
// target attribute, the prefetch distance, and the walk of a tile's activation rows in blocks
// (whole 16-row tiles for blocks of kFullRows rows, half tiles for the rest). x86-64 only:
// include it under FASTDECODE_X86_CLONES.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/int4_layout.h"
#include "kernels/row_blocks.h"

#define FASTDECODE_AVX2 __attribute__((target("avx2,fma")))

namespace fastdecode::kernels {

// Software prefetch distance along a row's weights (the same measurement as the VNNI
// kernels': the hardware prefetcher alone streamed far below DRAM bandwidth).
constexpr int64_t kPrefetchBytes = 8192;

// Blocks per chunk of the whole-tile kernels: their 16-bit sums go to an L1 scratch of this
// many blocks before the float part scales them. A multiple of every int4 group's block
// count (<= 8); an int8 channel's group (G == K) may span chunks.
constexpr int64_t kTileChunkBlocks = 8;

// One weight tile (`rows` <= 16 of them) against every activation row: blocks of kFullRows
// rows through full(m0, one_block, prefetch) where the tile is whole, the rows left through
// half(h, m0, mb, one_block, prefetch) on each 8-row half (for_row_blocks). one_block and
// mb are std::integral_constants (one_block: G == 32, a group is one block). Only the first
// block of rows streams the weights (prefetch); the others find them in L1.
template <int kFullRows, typename Full, typename Half>
FASTDECODE_AVX2 void tile_by_row_blocks(int64_t M, int64_t rows, bool one_block,
                                        const Full& full, const Half& half) {
  int64_t m_done = 0;
  if (rows == kInt4TileRows) {
    const auto whole_tiles = [&](auto ob) {
      for (; m_done + kFullRows <= M; m_done += kFullRows) full(m_done, ob, m_done == 0);
    };
    if (one_block) {
      whole_tiles(std::true_type{});
    } else {
      whole_tiles(std::false_type{});
    }
  }
  for (int64_t h = 0; h * 8 < rows; ++h) {
    for_row_blocks<4>(M - m_done, one_block, [&](int64_t m0, auto mb, auto ob) {
      half(h, m_done + m0, mb, ob, m_done + m0 == 0);
    });
  }
}

}  // namespace fastdecode::kernels
