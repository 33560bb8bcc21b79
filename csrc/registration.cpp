// The one TORCH_LIBRARY(fastdecode, m): every schema of the library, one comment each.
// Implementations register per backend in csrc/cpu/*.cpp (and csrc/cuda/*.cu when built).
#include <torch/library.h>

TORCH_LIBRARY(fastdecode, m) {
  // logits [V] or [B, V] (fp32/bf16/fp16) -> probabilities, same shape and dtype.
  // Repetition penalty over previous_tokens ([T] or [B, T]), temperature (0 = one-hot at the
  // argmax), top-k, softmax, then top-p and min-p; row_params [B, 5] (temperature, top_k,
  // top_p, min_p, repetition_penalty) overrides the scalars per row.
  m.def(
      "logits_to_probs(Tensor logits, Tensor? previous_tokens=None, float temperature=1.0, "
      "int? top_k=None, float top_p=1.0, float min_p=0.0, float repetition_penalty=1.0, "
      "Tensor? row_params=None) -> Tensor");
  // The range check of logits_to_probs's knobs on its own (a ValueError naming the knob),
  // so callers can reject bad knobs before any model work; row_params [B, 5] as above.
  m.def(
      "check_sampling_params(float temperature=1.0, int? top_k=None, float top_p=1.0, "
      "float min_p=0.0, float repetition_penalty=1.0, Tensor? row_params=None) -> ()");
  // probs [V] or [B, V] (non-negative, need not be normalised) -> int32 index [1] or [B, 1]:
  // a draw from probs with no host synchronisation: argmax(probs / noise) when `noise`
  // (Exp(1) draws, same shape as probs) is given, else the inverse of the cumulative sum at
  // one uniform per row drawn from `generator`.
  m.def(
      "multinomial_sample_one_no_sync(Tensor probs, Generator? generator=None, "
      "Tensor? noise=None) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // scores [V] or [B, V] (fp32/bf16/fp16) -> int32 [1] or [B, 1]: the index of each row's
  // first maximum (torch.argmax(..., -1, keepdim=True) as int32); NaN is an error.
  m.def("argmax_token(Tensor scores) -> Tensor");
  // x [..., K] @ weight[N, K]^T (+ bias [N]) -> [..., N]: F.linear with a weight-streaming
  // GEMV for decode-sized inputs (<= 16 rows, fp32) and ATen's GEMM otherwise.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
  // w [N, K] float -> (q int8 [N, K], scales fp32 [N]): symmetric per output channel,
  // scale = max|w| / 127.5 (gpt-fast's dynamically_quantize_per_channel).
  m.def("quantize_int8_per_channel(Tensor w) -> (Tensor, Tensor)");
  // w [N, K] float -> (packed uint8 [N, K_pad / 2], scales_and_zeros fp32 [N, K_pad / G, 2]):
  // asymmetric 4-bit groups, w = (q - 8) * scale + zero; K padded with zeros to a multiple
  // of groupsize (32, 64, 128 or 256). Layout in docs/formats.md.
  m.def("quantize_int4_grouped(Tensor w, int groupsize) -> (Tensor, Tensor)");
  // GGUF blocks uint8 [..., n * bytes] of ggml_type 2 (Q4_0), 3 (Q4_1) or 8 (Q8_0) -> fp32
  // [..., n * 32], bit for bit the gguf package's dequantisation.
  m.def("dequantize_gguf(Tensor blocks, int ggml_type) -> Tensor");
  // GGUF rows kept in their precision: blocks uint8 [N, K / 32 * block bytes] -> Q8_0: (q int8
  // [N, K], scales [N, K / 32]); Q4_0 / Q4_1: (packed [N, K / 2] and scales_and_zeros
  // [N, K / 32, 2] in the int4 layout, groupsize 32). Bit for bit the blocks' values.
  m.def("repack_gguf(Tensor blocks, int ggml_type) -> (Tensor, Tensor)");
  // ids int64 [...] -> fp32 [..., K]: rows ids of the int8 table q [N, K] * scales ([N] or
  // [N, K / G]), row-major or tiled as int8_linear takes it, dequantised on lookup (a
  // quantized model's embedding); ids in [0, N).
  m.def("int8_embedding(Tensor ids, Tensor q, Tensor scales) -> Tensor");
  // ids int64 [...] -> fp32 [..., dim]: rows ids of the int4 table (the int4_linear layout),
  // the first dim of its K_pad columns (K_pad - groupsize < dim <= K_pad); ids in [0, N).
  m.def(
      "int4_embedding(Tensor ids, Tensor packed, Tensor scales_and_zeros, int groupsize, "
      "int dim) -> Tensor");
  // x [..., K] @ (q * scales)^T (+ bias) -> [..., N]; scales [N] (per channel) or [N, K / G].
  // q int8 [N, K] row-major, or uint8 [N, K] in the tiled layout of tile_int8 (with its
  // tiled scales): the layout the kernels stream fastest.
  m.def("int8_linear(Tensor x, Tensor q, Tensor scales, Tensor? bias=None) -> Tensor");
  // (q int8 [N, K], scales [N] or [N, K / G]) -> (packed uint8 [N, K], scales) in 16-row
  // tiles: bytes q + 128, words of 4 columns (docs/formats.md); K a multiple of 32. Exact.
  m.def("tile_int8(Tensor q, Tensor scales) -> (Tensor, Tensor)");
  // tile_int8 in place (contiguous q and scales; q's bytes become the packed ones, viewed
  // as uint8 afterwards): a loaded model's weights without a second copy.
  m.def("tile_int8_(Tensor(a!) q, Tensor(b!) scales) -> ()");
  // The inverse of tile_int8.
  m.def("untile_int8(Tensor packed, Tensor scales) -> (Tensor, Tensor)");
  // x [..., K] @ dequant(packed, scales_and_zeros)^T (+ bias) -> [..., N]; K <= K_pad.
  m.def(
      "int4_linear(Tensor x, Tensor packed, Tensor scales_and_zeros, int groupsize, "
      "Tensor? bias=None) -> Tensor");
  // One decode position: qkv [B, 1, (H + 2 Hkv) * D] -> [B, 1, H * D]. RoPE (rope
  // [positions, D / 2, 2] cos/sin) on q and k, k/v written into the caches [B_max, Hkv, L, D]
  // at input_pos ([1] or [B, 1]), causal attention over positions 0..pos.
  // Speculative sampling's acceptance step. draft_tokens [B, k] drawn from draft_probs
  // [B, k, V]; target_probs [B, k + 1, V] from one target pass over [cur, drafts]. Token i is
  // kept with probability min(1, q_i / p_i); the first rejection is replaced by a draw from
  // norm(max(q - p, 0)), or after k acceptances a bonus token is drawn from q_k. Returns
  // (tokens int64 [B, k + 1], -1 after the last new token; num_accepted int64 [B]).
  // uniforms [B, k + 1] in [0, 1) (u_i for token i, u_k for the final draw) replace the
  // generator: how the op is checked against its oracle.
  m.def(
      "speculative_accept(Tensor draft_tokens, Tensor draft_probs, Tensor target_probs, "
      "Generator? generator=None, Tensor? uniforms=None) -> (Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // x [..., E] -> x * rsqrt(mean(x^2, -1) + eps) * weight [E], in x's dtype (fp32 math).
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  // qkv [B, S, (H + 2 Hkv) D] at input_pos [S] or [B, S] -> [B, S, H D]: RoPE, the new k/v
  // written into the caches, causal attention over cache positions 0..pos of each query.
  m.def(
      "decode_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor input_pos, "
      "Tensor rope, int n_head, int n_kv_head) -> Tensor");
  // Every pre-norm decoder layer of a model at S decode positions (a step, a verify pass), in
  // one call, fp32 x [B, S, E]. Per layer: h = x + wo(attention(wqkv(rms_norm(x)))),
  // out = h + w2(silu(w1(n)) * w3(n)) with n = rms_norm(h) (attention as decode_attention,
  // which writes the caches). L layers: 2L norms [attention_norm, ffn_norm per layer]; the
  // five linears' tensors of each layer follow one another in `weights`, one layer after
  // another, kinds[i] = 0 (fp32: weight), 1 (int8: q, scales) or 2 (int4: packed,
  // scales_and_zeros, groupsizes[i]), no biases; L k_caches and v_caches (all shaped alike,
  // no two overlapping). Every layer is checked before the first cache write. Returns the
  // last layer's output [B, S, E].
  m.def(
      "decode_layers(Tensor x, Tensor[] norms, float eps, Tensor[] weights, int[] kinds, "
      "int[] groupsizes, Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, Tensor input_pos, "
      "Tensor rope, int n_head, int n_kv_head) -> Tensor");
  // A whole decode step in one call: decode_layers (same arguments and checks), then the
  // final norm (final_norm [E], the layers' eps) and the output head (its tensors as one
  // linear of decode_layers: head_kind 0 fp32 [weight], 1 int8 [q, scales], 2 int4 [packed,
  // scales_and_zeros] with head_groupsize) over the last position (last_only) or all S.
  // Returns (logits [B, S', V], hidden [B, S', E]: the last layer's output before the final
  // norm, tokens int32 [B, S']: each logits row's first maximum, -1 where the row holds NaN),
  // S' = 1 with last_only, else S. Every argument is checked before the first cache write.
  m.def(
      "decode_step(Tensor x, Tensor[] norms, float eps, Tensor[] weights, int[] kinds, "
      "int[] groupsizes, Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, Tensor input_pos, "
      "Tensor rope, int n_head, int n_kv_head, Tensor final_norm, Tensor[] head, "
      "int head_kind, int head_groupsize, bool last_only) -> (Tensor, Tensor, Tensor)");
  // Tensor-parallel shards. t -> the slices [offsets[i], offsets[i] + lengths[i]) of
  // dimension dim, concatenated in order (uneven ranks, the fused wqkv's q / k / v segments,
  // int8 weights and their scales alike), contiguous.
  m.def("shard(Tensor t, int dim, int[] offsets, int[] lengths) -> Tensor");
  // The same cut of an int4 linear (16-row tiles, tests/reference/tp.py): dim 0 takes output
  // rows, dim 1 input columns on groupsize boundaries, of packed [N, K_pad / 2] and
  // scales_and_zeros [N, K_pad / G, 2] together -> (packed, scales_and_zeros), re-tiled.
  m.def(
      "shard_int4(Tensor packed, Tensor scales_and_zeros, int groupsize, int dim, "
      "int[] offsets, int[] lengths) -> (Tensor, Tensor)");
}
