// The CPU implementations of the library's ops, for ops that are composed of others in C++
// (csrc/cpu/decode_layer.cpp) without a trip through the dispatcher. Schemas and semantics:
// csrc/registration.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastdecode::cpu {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias);
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales,
                       const std::optional<at::Tensor>& bias);
at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& packed,
                       const at::Tensor& scales_and_zeros, int64_t groupsize,
                       const std::optional<at::Tensor>& bias);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                            int64_t n_kv_head);

}  // namespace fastdecode::cpu
