// The CPU implementations of the library's ops, for ops that are composed of others in C++
// (csrc/cpu/decode_layer.cpp) without a trip through the dispatcher. Schemas and semantics:
// csrc/registration.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

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
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                            int64_t n_kv_head);

}  // namespace fastdecode::cpu
