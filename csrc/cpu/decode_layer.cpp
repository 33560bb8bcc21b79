// fastdecode::decode_layers on the CPU: every decoder layer of a decode step (S <= 16
// positions) in one call, composed of the library's CPU ops in C++. Module by module, the
// step of a 30-layer model spends ~1.4 ms per token in ~20 Python module calls and
// dispatcher trips per layer around ops whose arithmetic takes microseconds.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "cpu/decode_layers.h"
#include "cpu/linear_kind.h"
#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "kernels/swiglu.h"

namespace fastdecode::cpu {
namespace {

constexpr int64_t kLinears = 5;  // wqkv, wo, w1 (gate), w3 (up), w2 (down)
constexpr const char* kNames[kLinears] = {"wqkv", "wo", "w1", "w3", "w2"};

// One layer's five linears: kinds / groupsizes [5] (wqkv, wo, w1, w3, w2), their tensors
// from weights[*next] on; *next advances past them. LinearArgs point into `weights`.
LayerLinears split_weights(const char* op, const std::vector<at::Tensor>& weights, size_t* next,
                           const int64_t* kinds, const int64_t* groupsizes) {
  LayerLinears out(kLinears);
  for (int64_t i = 0; i < kLinears; ++i) {
    TORCH_CHECK_VALUE(kinds[i] >= kFloat32 && kinds[i] <= kInt4, op, ": kinds[", i, "] (",
                      kNames[i], ") must be 0 (fp32), 1 (int8) or 2 (int4), got ", kinds[i]);
    const size_t n = kinds[i] == kFloat32 ? 1 : 2;
    TORCH_CHECK_VALUE(*next + n <= weights.size(), op, ": weights holds ", weights.size(),
                      " tensors, too few for the kinds ", at::IntArrayRef(kinds, kLinears));
    out[i] = {{&weights[*next], n == 2 ? &weights[*next + 1] : nullptr}, kinds[i],
              groupsizes[i]};
    *next += n;
  }
  return out;
}

// After the last layer: every tensor of `weights` was taken by some kind.
void check_all_taken(const char* op, const std::vector<at::Tensor>& weights,
                     const std::vector<int64_t>& kinds, size_t next) {
  TORCH_CHECK_VALUE(next == weights.size(), op, ": weights holds ", weights.size(),
                    " tensors, the kinds ", kinds, " take ", next);
}

// check_linear with the op's name and the linear's (kNames[i]) in its errors.
int64_t check_layer_linear(const char* op, int64_t i, const LinearArgs& l, int64_t in) {
  return check_linear((std::string(op) + " (" + kNames[i] + ")").c_str(), l, in);
}

// gate and up: one pass when both are int8 or both int4.
std::tuple<at::Tensor, at::Tensor> apply_pair(const LinearArgs& a, const LinearArgs& b,
                                              const at::Tensor& x) {
  if (a.kind == kInt8 && b.kind == kInt8) {
    return cpu::int8_linear_pair(x, *a.t[0], *a.t[1], *b.t[0], *b.t[1]);
  }
  if (a.kind == kInt4 && b.kind == kInt4) {
    return cpu::int4_linear_pair(x, *a.t[0], *a.t[1], a.groupsize, *b.t[0], *b.t[1],
                                 b.groupsize);
  }
  return {apply_linear(a, x), apply_linear(b, x)};
}

// Every argument of one layer checked as decode_layer checks it, before any work: the five
// linears (shapes chained E -> hidden -> E) and both norms. decode_attention checks the
// caches, positions and rotations itself, before its cache write.
LayerLinears check_layer(const char* op, const at::Tensor& x, const at::Tensor& attention_norm,
                         const at::Tensor& ffn_norm, double eps,
                         const std::vector<at::Tensor>& weights, size_t* next,
                         const int64_t* kinds, const int64_t* groupsizes,
                         const at::Tensor& k_cache, int64_t n_head) {
  check_rms_norm_args(op, x, attention_norm, eps);
  check_rms_norm_args(op, x, ffn_norm, eps);
  LayerLinears l = split_weights(op, weights, next, kinds, groupsizes);
  const int64_t E = x.size(2);
  check_layer_linear(op, 0, l[0], E);  // wqkv's out-features: decode_attention checks them first
  if (k_cache.dim() == 4) {      // else decode_attention's own check fails before its work
    TORCH_CHECK_VALUE(check_layer_linear(op, 1, l[1], n_head * k_cache.size(3)) == E, op,
                      ": wo must map back to E = ", E, " features");
  }
  const int64_t hidden = check_layer_linear(op, 2, l[2], E);
  TORCH_CHECK_VALUE(check_layer_linear(op, 3, l[3], E) == hidden, op,
                    ": w1 and w3 must have the same out-features");
  TORCH_CHECK_VALUE(check_layer_linear(op, 4, l[4], hidden) == E, op, ": w2 must map back to E = ",
                    E, " features");
  return l;
}

void check_x(const char* op, const at::Tensor& x) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, op, ": x must be float32, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(1) >= 1 && x.device().is_cpu(), op,
                    ": x must be a CPU tensor [B, S, E], got ", x.sizes());
}

// silu(gate) * up values per parallel task (one row of the default model's 1536 runs alone).
constexpr int64_t kSiluValuesPerTask = 2048;

// The layer's arithmetic on checked arguments; writes the caches at input_pos.
at::Tensor run_layer(const LayerLinears& l, const at::Tensor& x,
                     const at::Tensor& attention_norm, const at::Tensor& ffn_norm, double eps,
                     at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& input_pos,
                     const at::Tensor& rope, int64_t n_head, int64_t n_kv_head) {
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.numel();
  const at::Tensor qkv = apply_linear(l[0], rms_norm(xc, attention_norm, eps));
  const at::Tensor attn = apply_linear(
      l[1], decode_attention(qkv, k_cache, v_cache, input_pos, rope, n_head, n_kv_head));
  at::Tensor h = at::empty_like(xc);
  kernels::add_rows(xc.data_ptr<float>(), attn.data_ptr<float>(), n, h.data_ptr<float>());

  const at::Tensor normed = rms_norm(h, ffn_norm, eps);
  at::Tensor gate, up;
  std::tie(gate, up) = apply_pair(l[2], l[3], normed);
  // element-wise, so a batch's elements split between the threads at any boundary
  float* gp = gate.data_ptr<float>();
  const float* upp = up.data_ptr<float>();
  parallel_for(gate.numel(), kSiluValuesPerTask, [&](int64_t b, int64_t e) {
    kernels::silu_mul(gp + b, upp + b, e - b, gp + b);
  });
  const at::Tensor down = apply_linear(l[4], gate);
  kernels::add_rows(h.data_ptr<float>(), down.data_ptr<float>(), n, h.data_ptr<float>());
  return h;
}

}  // namespace

std::vector<LayerLinears> check_decode_layers(const char* op, const at::Tensor& x,
                                              const std::vector<at::Tensor>& norms, double eps,
                                              const std::vector<at::Tensor>& weights,
                                              const std::vector<int64_t>& kinds,
                                              const std::vector<int64_t>& groupsizes,
                                              const std::vector<at::Tensor>& k_caches,
                                              const std::vector<at::Tensor>& v_caches,
                                              int64_t n_head) {
  check_x(op, x);
  const int64_t layers = static_cast<int64_t>(k_caches.size());
  TORCH_CHECK_VALUE(layers >= 1 && v_caches.size() == k_caches.size() &&
                        norms.size() == 2 * k_caches.size() &&
                        kinds.size() == kLinears * k_caches.size() &&
                        groupsizes.size() == kinds.size(),
                    op, ": for L layers pass L k_caches and v_caches, 2L norms and 5L kinds and "
                    "groupsizes; got ", k_caches.size(), ", ", v_caches.size(), ", ",
                    norms.size(), ", ", kinds.size(), ", ", groupsizes.size());
  // Every layer is checked before the first writes its cache. The caches must all be shaped
  // like layer 0's, whose own check (in decode_attention) then covers them all.
  for (int64_t i = 1; i < layers; ++i) {
    TORCH_CHECK_VALUE(k_caches[i].sizes() == k_caches[0].sizes() &&
                          v_caches[i].sizes() == v_caches[0].sizes() &&
                          k_caches[i].scalar_type() == k_caches[0].scalar_type() &&
                          v_caches[i].scalar_type() == v_caches[0].scalar_type(),
                      op, ": the caches of layer ", i, " differ from layer 0's (",
                      k_caches[i].sizes(), " vs ", k_caches[0].sizes(), ")");
  }
  {
    std::vector<const at::Tensor*> caches;
    for (int64_t i = 0; i < layers; ++i) caches.insert(caches.end(), {&k_caches[i], &v_caches[i]});
    check_caches_disjoint(op, caches);
  }
  std::vector<LayerLinears> checked(layers);
  size_t next = 0;
  for (int64_t i = 0; i < layers; ++i) {
    checked[i] = check_layer(op, x, norms[2 * i], norms[2 * i + 1], eps, weights, &next,
                             kinds.data() + i * kLinears, groupsizes.data() + i * kLinears,
                             k_caches[i], n_head);
  }
  check_all_taken(op, weights, kinds, next);
  return checked;
}

at::Tensor run_decode_layers(const std::vector<LayerLinears>& layers, const at::Tensor& x,
                             const std::vector<at::Tensor>& norms, double eps,
                             std::vector<at::Tensor>& k_caches, std::vector<at::Tensor>& v_caches,
                             const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                             int64_t n_kv_head) {
  at::Tensor h = x;
  for (size_t i = 0; i < layers.size(); ++i) {
    h = run_layer(layers[i], h, norms[2 * i], norms[2 * i + 1], eps, k_caches[i], v_caches[i],
                  input_pos, rope, n_head, n_kv_head);
  }
  return h;
}

namespace {

at::Tensor decode_layers(const at::Tensor& x, const std::vector<at::Tensor>& norms, double eps,
                         const std::vector<at::Tensor>& weights,
                         const std::vector<int64_t>& kinds,
                         const std::vector<int64_t>& groupsizes,
                         std::vector<at::Tensor> k_caches, std::vector<at::Tensor> v_caches,
                         const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                         int64_t n_kv_head) {
  const std::vector<LayerLinears> layers =
      check_decode_layers("fastdecode::decode_layers", x, norms, eps, weights, kinds,
                          groupsizes, k_caches, v_caches, n_head);
  return run_decode_layers(layers, x, norms, eps, k_caches, v_caches, input_pos, rope, n_head,
                           n_kv_head);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("decode_layers", &decode_layers);
}

}  // namespace fastdecode::cpu
