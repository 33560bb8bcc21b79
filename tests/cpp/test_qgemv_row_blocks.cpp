// csrc/kernels/qgemv*: a row's result does not depend on the other activation rows of the
// call. The kernels walk the rows in blocks (4 or 8 at a time, then 2, then 1) and the AVX2
// int4 kernel takes whole 16-row tiles for blocks of 4 rows but half tiles otherwise; each
// row must come out bit for bit as it does alone, on every path, since the engine's
// requests share one batched step (a request's tokens must not depend on its neighbours).
#include <catch2/catch.hpp>

#include <functional>
#include <vector>

#include "kernels/int4_layout.h"
#include "kernels/int8_layout.h"
#include "kernels/qgemv.h"
#include "quantized_weights.h"

using namespace fastdecode::kernels;

namespace {

struct Activations {
  std::vector<float> x, scale, xsum;
  std::vector<int8_t> q;
  std::vector<int32_t> bsum;
  QuantizedActivations a;
};

// Rows [m0, m0 + M) of x [*, K], quantized as a call of M rows would see them.
Activations quantize_rows(const std::vector<float>& x, int64_t m0, int64_t M, int64_t K,
                          int64_t G) {
  Activations r;
  r.x.assign(x.begin() + m0 * K, x.begin() + (m0 + M) * K);
  r.q.resize(M * K);
  r.scale.resize(M * K / kActBlock);
  r.xsum.resize(M * (K / G));
  r.bsum.resize(M * K / kActBlock);
  quantize_activations(r.x.data(), M, K, K, r.q.data(), r.scale.data());
  r.a = QuantizedActivations{r.q.data(), r.scale.data(), M, K};
  group_sums(r.x.data(), M, K, G, r.xsum.data());
  activation_block_sums(r.a, r.bsum.data());
  return r;
}

}  // namespace

TEST_CASE("quantized GEMVs: every row of a batched call equals that row alone, bit for bit",
          "[qgemv]") {
  // K = 512: 16 blocks, two of the AVX2 whole-tile kernels' 8-block chunks (int8 per
  // channel, G = K, carries its group's sum across them); N = 37: two whole tiles and a
  // partial one; M up to 13: blocks of 8 / 4 / 2, then 1 row.
  const int64_t K = 512, N = 37, tiles = (N + 15) / 16, max_rows = 13;
  const auto x = normal(max_rows * K, 21), w = normal(N * K, 22);
  for (int64_t G : {32, 64, 256, 512}) {
    const bool int4_groups = is_int4_groupsize(G);  // int8 also per channel (G == K)
    const Int4Weight w4 = quantize_int4_tiled(w, N, K, int4_groups ? G : 32);
    const Int8Weight w8 = quantize_int8_grouped(w, N, K, G);
    std::vector<uint8_t> p8(N * K);
    std::vector<float> t8(w8.scales.size());
    tile_int8(w8.q.data(), w8.scales.data(), N, K, G, p8.data(), t8.data());

    const auto int4 = [&](auto kernel) {
      return [&, kernel](const Activations& r, float* y) {
        kernel(r.a, r.bsum.data(), r.xsum.data(), w4.packed.data(), w4.sz.data(), N, G, 0,
               tiles, y, N);
      };
    };
    const auto int8 = [&](auto kernel) {
      return [&, kernel](const Activations& r, float* y) {
        kernel(r.a, r.bsum.data(), p8.data(), t8.data(), N, G, 0, tiles, y, N);
      };
    };
    const auto rows_alone_equal_batch = [&](const char* path,
                                            const std::function<void(const Activations&,
                                                                     float*)>& run) {
      std::vector<std::vector<float>> alone(max_rows, std::vector<float>(N));
      for (int64_t m = 0; m < max_rows; ++m) run(quantize_rows(x, m, 1, K, G), alone[m].data());
      for (int64_t M = 2; M <= max_rows; ++M) {
        std::vector<float> y(M * N);
        run(quantize_rows(x, 0, M, K, G), y.data());
        for (int64_t m = 0; m < M; ++m) {
          INFO(path << ", G = " << G << ", M = " << M << ", row " << m);
          REQUIRE(std::vector<float>(y.begin() + m * N, y.begin() + (m + 1) * N) == alone[m]);
        }
      }
    };
    if (int4_groups) {
      rows_alone_equal_batch("int4 dispatched", int4(int4_gemv));
      rows_alone_equal_batch("int4 portable", int4(int4_gemv_portable));
    }
    rows_alone_equal_batch("int8 dispatched", int8(int8_tiled_gemv));
    rows_alone_equal_batch("int8 portable", int8(int8_tiled_gemv_portable));
#if FASTDECODE_X86_CLONES
    if (qgemv_avx2_available()) {
      if (int4_groups) rows_alone_equal_batch("int4 avx2", int4(int4_gemv_avx2));
      rows_alone_equal_batch("int8 avx2", int8(int8_tiled_gemv_avx2));
    }
#endif
  }
}
