// fastdecode::decode_attention on the CPU: checks, then the cache writes (one task) and the
// per-(row, head) attention in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/parallel.h"
#include "kernels/decode_attention.h"

namespace fastdecode::cpu {
namespace {

// Multiply-adds below which a batch of (row, head) tasks is not split across threads.
constexpr int64_t kMinWorkPerTask = 1 << 16;

}  // namespace

at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                            const at::Tensor& input_pos, const at::Tensor& rope, int64_t n_head,
                            int64_t n_kv_head) {
  constexpr const char* op = "fastdecode::decode_attention";
  TORCH_CHECK_VALUE(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0, op,
                    ": n_head must be a positive multiple of n_kv_head, got ", n_head, " and ",
                    n_kv_head);
  TORCH_CHECK_VALUE(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes() &&
                        k_cache.size(1) == n_kv_head,
                    op, ": k_cache and v_cache must both be [B_max, n_kv_head, L, D], got ",
              k_cache.sizes(), " and ", v_cache.sizes());
  const int64_t L = k_cache.size(2), D = k_cache.size(3);
  TORCH_CHECK_VALUE(D > 0 && D % 2 == 0 && D <= 512, op,
                    ": head_dim must be even, > 0 and <= 512, got ", D);
  TORCH_CHECK_VALUE(qkv.dim() == 3 && qkv.size(1) == 1 &&
                        qkv.size(2) == (n_head + 2 * n_kv_head) * D,
                    op, ": qkv must be [B, 1, (n_head + 2 n_kv_head) * head_dim] = [B, 1, ",
                    (n_head + 2 * n_kv_head) * D, "], got ", qkv.sizes());
  const int64_t B = qkv.size(0);
  TORCH_CHECK_VALUE(B <= k_cache.size(0), op, ": batch ", B, " exceeds the cache's ",
                    k_cache.size(0));
  for (const at::Tensor* t : {&qkv, static_cast<const at::Tensor*>(&k_cache),
                              static_cast<const at::Tensor*>(&v_cache), &rope}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat, op,
                     ": qkv, caches and rope must be float32, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": qkv, caches and rope must be CPU tensors");
  }
  TORCH_CHECK_VALUE(k_cache.is_contiguous() && v_cache.is_contiguous(), op,
                    ": the caches must be contiguous");
  TORCH_CHECK_VALUE(rope.dim() == 3 && rope.size(1) == D / 2 && rope.size(2) == 2, op,
                    ": rope must be [positions, head_dim / 2, 2] (cos, sin), got ", rope.sizes());
  TORCH_CHECK_TYPE(input_pos.scalar_type() == at::kLong, op, ": input_pos must be int64, got ",
                   input_pos.scalar_type());
  TORCH_CHECK_VALUE(input_pos.device().is_cpu() &&
                        (input_pos.numel() == 1 || input_pos.numel() == B),
                    op, ": input_pos must be a CPU tensor [1] or [B, 1], got ",
                    input_pos.sizes());
  const at::Tensor pos_cpu = input_pos.reshape({-1}).contiguous();
  const int64_t* pos = pos_cpu.data_ptr<int64_t>();
  std::vector<int64_t> row_pos(B);
  for (int64_t b = 0; b < B; ++b) {
    row_pos[b] = pos[input_pos.numel() == 1 ? 0 : b];
    TORCH_CHECK_VALUE(row_pos[b] >= 0 && row_pos[b] < L && row_pos[b] < rope.size(0), op,
                      ": input_pos ", row_pos[b], " outside the cache (length ", L, ")");
  }

  const at::Tensor x = qkv.contiguous();
  const at::Tensor r = rope.contiguous();
  at::Tensor y = at::empty({B, 1, n_head * D}, x.options());
  const kernels::DecodeAttentionShape shape{n_head, n_kv_head, D, L};
  const float* xp = x.data_ptr<float>();
  const float* rp = r.data_ptr<float>();
  float* kp = k_cache.data_ptr<float>();
  float* vp = v_cache.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t row_cache = n_kv_head * L * D;
  const int64_t row_qkv = (n_head + 2 * n_kv_head) * D;
  for (int64_t b = 0; b < B; ++b) {
    kernels::write_rotated_kv(xp + b * row_qkv, rp + row_pos[b] * D, row_pos[b], shape,
                              kp + b * row_cache, vp + b * row_cache);
  }
  // (row, head) tasks cost ~2 (pos + 1) D multiply-adds each: early in a sequence a whole
  // step is a few thousand, less than waking the thread pool costs, so it runs on one thread
  int64_t max_pos = 0;
  for (int64_t p : row_pos) max_pos = std::max(max_pos, p);
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerTask / (2 * (max_pos + 1) * D));
  parallel_for(B * n_head, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(L);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_head, h = i % n_head;
      kernels::attend_one_head(xp + b * row_qkv, rp + row_pos[b] * D, row_pos[b], h, shape,
                               kp + b * row_cache, vp + b * row_cache, scores.data(),
                               yp + b * n_head * D + h * D);
    }
  });
  return y;
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("decode_attention", &decode_attention); }

}  // namespace fastdecode::cpu
