// fastdecode::decode_step on the CPU: a whole decode step in one call, the decoder layers
// (as decode_layers), the final norm, the output head and each logits row's greedy token.
// Without it the step left C++ for the norm and head modules and an argmax op: three more
// dispatcher trips and their Python around the largest linear of the step.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "cpu/decode_layers.h"
#include "cpu/linear_kind.h"
#include "cpu/ops.h"

namespace fastdecode::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_step(
    const at::Tensor& x, const std::vector<at::Tensor>& norms, double eps,
    const std::vector<at::Tensor>& weights, const std::vector<int64_t>& kinds,
    const std::vector<int64_t>& groupsizes, std::vector<at::Tensor> k_caches,
    std::vector<at::Tensor> v_caches, const at::Tensor& input_pos, const at::Tensor& rope,
    int64_t n_head, int64_t n_kv_head, const at::Tensor& final_norm,
    const std::vector<at::Tensor>& head, int64_t head_kind, int64_t head_groupsize,
    bool last_only) {
  constexpr const char* op = "fastdecode::decode_step";
  // everything checked before the layers' first cache write
  const std::vector<LayerLinears> layers = check_decode_layers(
      op, x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches, n_head);
  check_rms_norm_args(op, x, final_norm, eps);
  TORCH_CHECK_VALUE(head_kind >= kFloat32 && head_kind <= kInt4, op,
                    ": head_kind must be 0 (fp32), 1 (int8) or 2 (int4), got ", head_kind);
  const size_t head_tensors = head_kind == kFloat32 ? 1 : 2;
  TORCH_CHECK_VALUE(head.size() == head_tensors, op, ": a head of kind ", head_kind, " takes ",
                    head_tensors, " tensors, got ", head.size());
  const LinearArgs head_linear{{&head[0], head_tensors == 2 ? &head[1] : nullptr},
                               head_kind, head_groupsize};
  const int64_t vocab =
      check_linear((std::string(op) + " (head)").c_str(), head_linear, x.size(2));

  at::Tensor hidden = run_decode_layers(layers, x, norms, eps, k_caches, v_caches, input_pos,
                                        rope, n_head, n_kv_head);
  if (last_only) hidden = hidden.narrow(1, hidden.size(1) - 1, 1).contiguous();
  const at::Tensor logits = apply_linear(head_linear, rms_norm(hidden, final_norm, eps));
  const int64_t B = logits.size(0), S = logits.size(1);
  at::Tensor tokens = at::empty({B, S}, logits.options().dtype(at::kInt));
  std::vector<char> has_nan(B * S, 0);
  int32_t* tp = tokens.data_ptr<int32_t>();
  first_max_rows(logits.data_ptr<float>(), B * S, vocab, tp, has_nan.data());
  for (int64_t r = 0; r < B * S; ++r) {
    if (has_nan[r]) tp[r] = -1;  // no greedy token: the caller decides (argmax_token refuses)
  }
  return {logits, hidden, tokens};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("decode_step", &decode_step);
}

}  // namespace fastdecode::cpu
