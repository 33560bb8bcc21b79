// One linear of the fused decode ops (decode_layers, decode_step), given by kind
// (cpu/linear_kind.h) and its tensors: checked as its own op checks it, and applied.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fastdecode::cpu {

// The tensors of a linear inside an op's tensor list: fp32 [weight], int8 [q, scales], int4
// [packed, scales_and_zeros]. Pointers into that list: it must outlive the LinearArgs.
struct LinearArgs {
  const at::Tensor* t[2];
  int64_t kind, groupsize;
};

// The linear's out-features, after checking its tensors as its op does and that it takes
// `in` features; `name` leads every error. Fused ops run it for every linear before any
// work: the attention writes the KV cache, so a later mismatch would leave it changed.
int64_t check_linear(const char* name, const LinearArgs& l, int64_t in);

// x [..., K] -> [..., N] through the linear's op (int8_linear, int4_linear or linear).
at::Tensor apply_linear(const LinearArgs& l, const at::Tensor& x);

}  // namespace fastdecode::cpu
