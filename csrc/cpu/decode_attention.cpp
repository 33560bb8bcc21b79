// fastdecode::decode_attention on the CPU (fp32 or fp16 caches): checks, then the cache writes
// (one task) and the per-(query, head) attention in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "kernels/decode_attention.h"

namespace fastdecode::cpu {
namespace {

// Multiply-adds below which a batch of (row, head) tasks is not split across threads.
constexpr int64_t kMinWorkPerTask = 1 << 16;
// Queries whose new keys and values one parallel task writes.
constexpr int64_t kWritesPerTask = 2;

// The new keys and values of every query (b, s) written, then every (query, head) attended:
// x [B, S, (H + 2 Hkv) D], caches [B_max, Hkv, L, D] of T (float or fp16 bits), y [B, S, H D].
template <typename T>
void attend_rows(const at::Tensor& x, const at::Tensor& r, T* kp, T* vp,
                 const std::vector<int64_t>& row_pos, const kernels::DecodeAttentionShape& shape,
                 int64_t S, at::Tensor& y) {
  const int64_t B = x.size(0), n_head = shape.n_head, n_kv_head = shape.n_kv_head;
  const int64_t D = shape.head_dim, L = shape.cache_len;
  const float* xp = x.data_ptr<float>();
  const float* rp = r.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t row_cache = n_kv_head * L * D;
  const int64_t row_qkv = (n_head + 2 * n_kv_head) * D;
  // every new key and value first: query s of a row attends to the positions <= its own,
  // the row's earlier new positions included (causal among the S new positions)
  // (each query writes its own position of its own row: queries split between threads)
  parallel_for(B * S, kWritesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / S;
      kernels::write_rotated_kv(xp + i * row_qkv, rp + row_pos[i] * D, row_pos[i], shape,
                                kp + b * row_cache, vp + b * row_cache);
    }
  });
  // (query, head) tasks cost ~2 (pos + 1) D multiply-adds each: early in a sequence a whole
  // step is a few thousand, less than waking the thread pool costs, so it runs on one thread
  int64_t max_pos = 0;
  for (int64_t p : row_pos) max_pos = std::max(max_pos, p);
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerTask / (2 * (max_pos + 1) * D));
  parallel_for(B * S * n_head, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(L);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t / n_head, h = t % n_head, b = i / S;
      kernels::attend_one_head(xp + i * row_qkv, rp + row_pos[i] * D, row_pos[i], h, shape,
                               kp + b * row_cache, vp + b * row_cache, scores.data(),
                               yp + i * n_head * D + h * D);
    }
  });
}

}  // namespace

void check_caches_disjoint(const char* op, const std::vector<const at::Tensor*>& caches) {
  // [first byte, one past the last byte, index] of each cache, sorted: neighbours overlap
  // exactly when some pair does.
  struct Span {
    uintptr_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  spans.reserve(caches.size());
  for (size_t i = 0; i < caches.size(); ++i) {
    const at::Tensor& t = *caches[i];
    if (t.numel() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    spans.push_back({begin, begin + static_cast<uintptr_t>(t.nbytes()), i});
  }
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    TORCH_CHECK_VALUE(spans[i].begin >= spans[i - 1].end, op, ": caches ",
                      std::min(spans[i - 1].index, spans[i].index), " and ",
                      std::max(spans[i - 1].index, spans[i].index),
                      " (in k, v order per layer) share memory; every KV cache must be a "
                      "tensor of its own");
  }
}

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
  TORCH_CHECK_VALUE(qkv.dim() == 3 && qkv.size(1) >= 1 &&
                        qkv.size(2) == (n_head + 2 * n_kv_head) * D,
                    op, ": qkv must be [B, S, (n_head + 2 n_kv_head) * head_dim] = [B, S, ",
                    (n_head + 2 * n_kv_head) * D, "], got ", qkv.sizes());
  const int64_t B = qkv.size(0), S = qkv.size(1);
  TORCH_CHECK_VALUE(B <= k_cache.size(0), op, ": batch ", B, " exceeds the cache's ",
                    k_cache.size(0));
  for (const at::Tensor* t : {&qkv, &rope}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat, op, ": qkv and rope must be float32, got ",
                     t->scalar_type());
  }
  // the caches: both float32, or both float16 (half the bytes a step reads)
  TORCH_CHECK_TYPE((k_cache.scalar_type() == at::kFloat || k_cache.scalar_type() == at::kHalf) &&
                       v_cache.scalar_type() == k_cache.scalar_type(),
                   op, ": k_cache and v_cache must both be float32 or both float16, got ",
                   k_cache.scalar_type(), " and ", v_cache.scalar_type());
  for (const at::Tensor* t : {&qkv, static_cast<const at::Tensor*>(&k_cache),
                              static_cast<const at::Tensor*>(&v_cache), &rope}) {
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": qkv, caches and rope must be CPU tensors");
  }
  TORCH_CHECK_VALUE(k_cache.is_contiguous() && v_cache.is_contiguous(), op,
                    ": the caches must be contiguous");
  check_caches_disjoint(op, {&k_cache, &v_cache});
  TORCH_CHECK_VALUE(rope.dim() == 3 && rope.size(1) == D / 2 && rope.size(2) == 2, op,
                    ": rope must be [positions, head_dim / 2, 2] (cos, sin), got ", rope.sizes());
  TORCH_CHECK_TYPE(input_pos.scalar_type() == at::kLong, op, ": input_pos must be int64, got ",
                   input_pos.scalar_type());
  // [S] (every row at the same positions) or [B, S] (per row: batched speculative rounds)
  const bool per_row = input_pos.dim() == 2;
  TORCH_CHECK_VALUE(input_pos.device().is_cpu() &&
                        ((input_pos.dim() == 1 && input_pos.size(0) == S) ||
                         (per_row && input_pos.size(0) == B && input_pos.size(1) == S)),
                    op, ": input_pos must be a CPU tensor [S] or [B, S] with S = ", S,
                    " positions of qkv, got ", input_pos.sizes());
  const at::Tensor pos_cpu = input_pos.contiguous();
  const int64_t* pos = pos_cpu.data_ptr<int64_t>();
  std::vector<int64_t> row_pos(B * S);  // the position of query (b, s)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t q = 0; q < S; ++q) {
      const int64_t p = pos[per_row ? b * S + q : q];
      TORCH_CHECK_VALUE(p >= 0 && p < L && p < rope.size(0), op, ": input_pos ", p,
                        " outside the cache (length ", L, ")");
      row_pos[b * S + q] = p;
    }
  }

  const at::Tensor x = qkv.contiguous();
  const at::Tensor r = rope.contiguous();
  at::Tensor y = at::empty({B, S, n_head * D}, x.options());
  const kernels::DecodeAttentionShape shape{n_head, n_kv_head, D, L};
  if (k_cache.scalar_type() == at::kHalf) {
    // fp16 bits: torch's Half is IEEE binary16, the kernels' uint16_t cache element
    attend_rows(x, r, static_cast<uint16_t*>(k_cache.data_ptr()),
                static_cast<uint16_t*>(v_cache.data_ptr()), row_pos, shape, S, y);
  } else {
    attend_rows(x, r, k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), row_pos, shape, S,
                y);
  }
  return y;
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("decode_attention", &decode_attention); }

}  // namespace fastdecode::cpu
