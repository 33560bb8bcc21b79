// The CPU implementations of the library's ops, for ops that are composed of others in C++
// (csrc/cpu/decode_layer.cpp) without a trip through the dispatcher. Schemas and semantics:
// csrc/registration.cpp.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>
#include <vector>

namespace fastdecode::cpu {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias);
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales,
                       const std::optional<at::Tensor>& bias);
at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& packed,
                       const at::Tensor& scales_and_zeros, int64_t groupsize,
                       const std::optional<at::Tensor>& bias);
// x times two weights of one kind that share x (gate and up), no bias: on the GEMV path one
// activation quantization and one parallel region. Not ops of the library: decode_layer's
// helpers.
std::tuple<at::Tensor, at::Tensor> int8_linear_pair(const at::Tensor& x, const at::Tensor& q_a,
                                                    const at::Tensor& scales_a,
                                                    const at::Tensor& q_b,
                                                    const at::Tensor& scales_b);
std::tuple<at::Tensor, at::Tensor> int4_linear_pair(const at::Tensor& x,
                                                    const at::Tensor& packed_a,
                                                    const at::Tensor& sz_a, int64_t groupsize_a,
                                                    const at::Tensor& packed_b,
                                                    const at::Tensor& sz_b, int64_t groupsize_b);
// y [M, N] (row stride ldy) = x [M, K] . w [N, K]^T by kernels::gemm_f32 (only where
// kernels::gemm_f32_available()), N split over ATen's OpenMP threads: prefill's other ops
// (attention, elementwise) run on them, and a second team beside them would share the cores
// with OpenMP's spinning workers (measured: a third of a 512-position prefill).
void gemm_f32_parallel(const float* x, int64_t ldx, int64_t M, int64_t K, const float* w,
                       int64_t ldw, int64_t N, float* y, int64_t ldy);
// dequantise(n0, n1, dst): weight rows [n0, n1) (n0 a multiple of 16) -> dst [n1 - n0, K_pad]
// fp32, called for parts of one block at once from ATen's threads.
using Dequantise = std::function<void(int64_t, int64_t, float*)>;
// xa [M, K_pad] contiguous fp32 (the quantized linears' activations, padded) times the
// [N, K_pad] weight that `dequantise` produces -> y [M, N] fp32: the weight dequantised
// block by block (~1 MB of fp32, whole 16-row tiles) by all threads into one buffer that
// stays in cache while the GEMM (gemm_f32 where gemm_f32_available(), else ATen's) reads
// it: no fp32 copy of the whole weight (113 MB for the default model's head), no page
// faults per call.
at::Tensor dequantized_gemm(const at::Tensor& xa, int64_t N, const Dequantise& dequantise);
// x [rows, n] contiguous fp32 -> index[r]: the first maximum of row r (torch.argmax's rule
// over its non-NaN entries), has_nan[r]: whether the row holds NaN. Rows in parallel.
void first_max_rows(const float* x, int64_t rows, int64_t n, int32_t* index, char* has_nan);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         double eps);

// A linear's weight checked as its op checks it (same errors), without an input: the
// out-features and the range of in-features it takes. For ops that must reject every bad
// argument before their first write (decode_layer writes the KV cache midway).
struct LinearShape {
  int64_t out_features, in_min, in_max;
};
LinearShape dense_linear_shape(const char* op, const at::Tensor& weight);
LinearShape int8_linear_shape(const char* op, const at::Tensor& q, const at::Tensor& scales);
LinearShape int4_linear_shape(const char* op, const at::Tensor& packed, const at::Tensor& sz,
                              int64_t groupsize);
// Row-major int4 weights (packed [N, K / 2] uint8, scales_and_zeros [N, K / G, 2] fp32,
// contiguous) -> the same in 16-row tiles (kernels/int4_layout.h), new tensors.
std::tuple<at::Tensor, at::Tensor> tile_int4(const at::Tensor& rows_packed,
                                             const at::Tensor& rows_sz);
// KV caches written in place must not overlap in memory (k is v, or one cache shared by two
// layers, would let one write clobber another's keys). ValueError naming the pair.
void check_caches_disjoint(const char* op, const std::vector<const at::Tensor*>& caches);
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                            int64_t n_kv_head);

}  // namespace fastdecode::cpu
