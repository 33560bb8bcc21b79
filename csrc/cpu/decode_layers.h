// The decoder layers of a fused decode step (csrc/cpu/decode_layer.cpp), checked and run
// apart: fastdecode::decode_layers is the two in a row, fastdecode::decode_step
// (csrc/cpu/decode_step.cpp) checks its final norm and head before the layers' first cache
// write and runs them after the layers.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "cpu/linear_args.h"

namespace fastdecode::cpu {

// One layer's five linears: wqkv, wo, w1 (gate), w3 (up), w2 (down).
using LayerLinears = std::vector<LinearArgs>;

// Every argument of decode_layers (schema in csrc/registration.cpp) checked, `op` leading
// each error; nothing is written. Returns each layer's linears (pointing into `weights`).
std::vector<LayerLinears> check_decode_layers(const char* op, const at::Tensor& x,
                                              const std::vector<at::Tensor>& norms, double eps,
                                              const std::vector<at::Tensor>& weights,
                                              const std::vector<int64_t>& kinds,
                                              const std::vector<int64_t>& groupsizes,
                                              const std::vector<at::Tensor>& k_caches,
                                              const std::vector<at::Tensor>& v_caches,
                                              int64_t n_head);

// The layers on checked arguments: x [B, S, E] -> the last layer's output [B, S, E]; writes
// every layer's caches at input_pos.
at::Tensor run_decode_layers(const std::vector<LayerLinears>& layers, const at::Tensor& x,
                             const std::vector<at::Tensor>& norms, double eps,
                             std::vector<at::Tensor>& k_caches, std::vector<at::Tensor>& v_caches,
                             const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                             int64_t n_kv_head);

}  // namespace fastdecode::cpu
