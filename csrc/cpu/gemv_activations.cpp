#include "cpu/gemv_activations.h"

#include <atomic>

#include "cpu/parallel.h"

namespace fastdecode::cpu {
namespace {

// Activation values from which gemv_activations splits its rows between the threads (below,
// a parallel loop's start costs about what it saves).
constexpr int64_t kParallelPrepareValues = 2048;

int64_t aligned64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

}  // namespace

// x [..., K] -> contiguous fp32 [M, K_pad] (zero columns appended when K < K_pad).
at::Tensor activations(const at::Tensor& x, int64_t K, int64_t K_pad) {
  at::Tensor x2 = x.reshape({-1, K}).to(at::kFloat).contiguous();
  if (K_pad > K) x2 = at::constant_pad_nd(x2, {0, K_pad - K}, 0.0);
  return x2;
}

GemvActivations gemv_activations(const at::Tensor& x, int64_t K, int64_t K_x, int64_t K_q,
                                 int64_t G, bool block_sums, bool split) {
  GemvActivations a;
  const int64_t M = x.numel() / K;
  const float* xp;
  if (x.scalar_type() == at::kFloat && x.is_contiguous() && K_x == K) {
    xp = x.data_ptr<float>();
  } else {
    a.rows = activations(x, K, K_x);
    xp = a.rows.data_ptr<float>();
  }
  const int64_t q_bytes = aligned64(M * K_q);
  const int64_t scale_bytes = aligned64(M * (K_q / kernels::kActBlock) * 4);
  const int64_t sum_bytes = G > 0 ? aligned64(M * (K_x / G) * 4) : 0;
  const int64_t bsum_bytes = block_sums ? aligned64(M * (K_q / kernels::kActBlock) * 4) : 0;
  split = split && kernels::int8_tiled_gemv_takes_split(M);
  const int64_t split_bytes = split ? 2 * M * K_q : 0;
  a.workspace = at::empty({q_bytes + scale_bytes + sum_bytes + bsum_bytes + split_bytes},
                          x.options().dtype(at::kByte));
  uint8_t* base = a.workspace.data_ptr<uint8_t>();
  auto* q = reinterpret_cast<int8_t*>(base);
  auto* scale = reinterpret_cast<float*>(base + q_bytes);
  auto* xsum = G > 0 ? reinterpret_cast<float*>(base + q_bytes + scale_bytes) : nullptr;
  auto* bsum = block_sums
                   ? reinterpret_cast<int32_t*>(base + q_bytes + scale_bytes + sum_bytes)
                   : nullptr;
  auto* planes = split ? reinterpret_cast<int8_t*>(base + q_bytes + scale_bytes + sum_bytes +
                                                   bsum_bytes)
                       : nullptr;
  // rows [b, e): each row's values, scales and sums depend on that row alone, so a batch
  // splits them between the threads (on the main thread alone they were ~5% of a batch-8
  // step while the helpers waited)
  std::atomic<bool> finite{true};
  const auto prepare = [&](int64_t b, int64_t e) {
    const int64_t blocks = K_q / kernels::kActBlock;
    int8_t* qb = q + b * K_q;
    float* sb = scale + b * blocks;
    if (!kernels::quantize_activations(xp + b * K_x, e - b, K_x, K_q, qb, sb)) {
      finite.store(false, std::memory_order_relaxed);
      return;
    }
    const kernels::QuantizedActivations rows{qb, sb, e - b, K_q};
    if (G > 0) kernels::group_sums(xp + b * K_x, e - b, K_x, G, xsum + b * (K_x / G));
    if (block_sums) kernels::activation_block_sums(rows, bsum + b * blocks);
    if (split) kernels::split_activations(rows, planes + 2 * b * K_q);
  };
  if (M * K_q >= kParallelPrepareValues) {
    parallel_for(M, 1, prepare);
  } else {
    prepare(0, M);
  }
  a.finite = finite.load(std::memory_order_relaxed);
  if (!a.finite) return a;
  a.view = {q, scale, M, K_q, planes};
  a.xsum = xsum;
  a.bsum = bsum;
  return a;
}

}  // namespace fastdecode::cpu
