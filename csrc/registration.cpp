// The one TORCH_LIBRARY(fastdecode, m): every schema of the library, one comment each.
// Implementations register per backend in csrc/cpu/*.cpp (and csrc/cuda/*.cu when built).
#include <torch/library.h>

TORCH_LIBRARY(fastdecode, m) {
  // logits [V] or [B, V] (fp32/bf16/fp16) -> probabilities, same shape and dtype.
  // softmax(logits / temperature) restricted to the top_k largest logits (ties at the k-th
  // value kept); temperature 0 = one-hot at the argmax (greedy).
  m.def("logits_to_probs(Tensor logits, float temperature=1.0, int? top_k=None) -> Tensor");
  // probs [V] or [B, V] -> int32 index [1] or [B, 1]: argmax(probs / Exp(1) noise), a draw
  // from probs (need not be normalised) with no host synchronisation.
  m.def("multinomial_sample_one_no_sync(Tensor probs, Generator? generator=None) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // x [..., K] @ weight[N, K]^T (+ bias [N]) -> [..., N]: F.linear with a weight-streaming
  // GEMV for decode-sized inputs (<= 8 rows, fp32) and ATen's GEMM otherwise.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
}
