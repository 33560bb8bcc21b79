// The quantized GEMVs' activation pass (csrc/cpu/quantized_linear.cpp): x rounded to 8-bit
// integers per 32 values, with the sums and split values the int4 and tiled int8 kernels
// take (csrc/kernels/qgemv.h), in one allocation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kernels/qgemv.h"

namespace fastdecode::cpu {

// x [..., K] -> contiguous fp32 [M, K_pad] (zero columns appended when K < K_pad).
at::Tensor activations(const at::Tensor& x, int64_t K, int64_t K_pad);

// The GEMV path's activations: x [..., K] as fp32 rows with stride K_x (x itself when it is
// contiguous fp32 and needs no padding), quantized to K_q columns, and for int4 the group
// sums; the quantized values, scales and sums share one allocation (a decode step makes
// ~150 of these calls, each allocation costs about half a microsecond).
struct GemvActivations {
  at::Tensor rows;  // a converted or padded copy of x, when one was needed
  // q int8 [M, K_q] | scale fp32 [M, K_q / 32] | int4: group sums of x fp32 [M, K_x / G] |
  // tiled int8 and int4: block sums of q int32 [M, K_q / 32] | tiled int8 on the AVX2 path:
  // split q int8 [M, 2, K_q] (view.split)
  at::Tensor workspace;
  kernels::QuantizedActivations view;
  const float* xsum = nullptr;
  const int32_t* bsum = nullptr;
  bool finite = true;  // false: x holds NaN / inf, which the integer path cannot carry
};

// G: the int4 group size for the sums, 0 for none; block_sums: the block sums the tiled
// int8 and the int4 kernels take; split: the tiled int8 kernels' split activations (computed
// only where the dispatched kernel reads them). Rows split between the threads from
// kParallelPrepareValues values on; each row's results depend on that row alone.
GemvActivations gemv_activations(const at::Tensor& x, int64_t K, int64_t K_x, int64_t K_q,
                                 int64_t G, bool block_sums = false, bool split = false);

}  // namespace fastdecode::cpu
