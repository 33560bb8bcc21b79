// fastdecode::dequantize_gguf and repack_gguf on the CPU: checks, then the block decoder
// over row chunks, or the blocks repacked into the quantized linears' layouts.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "cpu/ops.h"
#include "kernels/gguf_blocks.h"

namespace fastdecode::cpu {
namespace {

// The block type and the blocks' dtype; returns the bytes per block.
int64_t check_blocks(const char* op, const at::Tensor& blocks, int64_t ggml_type) {
  const int64_t bytes = kernels::gguf_block_bytes(ggml_type);
  TORCH_CHECK_VALUE(bytes > 0, op, ": ggml_type must be 2 (Q4_0), 3 (Q4_1) or 8 (Q8_0), got ",
                    ggml_type);
  TORCH_CHECK_TYPE(blocks.scalar_type() == at::kByte, op, ": blocks must be uint8, got ",
                   blocks.scalar_type());
  return bytes;
}

}  // namespace

at::Tensor dequantize_gguf(const at::Tensor& blocks, int64_t ggml_type) {
  constexpr const char* op = "fastdecode::dequantize_gguf";
  const int64_t bytes = check_blocks(op, blocks, ggml_type);
  TORCH_CHECK_VALUE(blocks.dim() >= 1 && blocks.device().is_cpu(), op,
                    ": blocks must be a CPU tensor [..., n * ", bytes, "], got ", blocks.sizes());
  TORCH_CHECK_VALUE(blocks.size(-1) % bytes == 0, op, ": the last dimension (",
                    blocks.size(-1), " bytes) must hold whole blocks of ", bytes, " bytes");
  auto shape = blocks.sizes().vec();
  shape.back() = blocks.size(-1) / bytes * 32;
  at::Tensor out = at::empty(shape, blocks.options().dtype(at::kFloat));
  const at::Tensor src = blocks.contiguous();
  const int64_t n_blocks = src.numel() / bytes;
  const uint8_t* sp = src.data_ptr<uint8_t>();
  float* op_ = out.data_ptr<float>();
  at::parallel_for(0, n_blocks, 4096, [&](int64_t begin, int64_t end) {
    kernels::dequantize_gguf_blocks(sp + begin * bytes, end - begin, ggml_type, op_ + begin * 32);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> repack_gguf(const at::Tensor& blocks, int64_t ggml_type) {
  constexpr const char* op = "fastdecode::repack_gguf";
  const int64_t bytes = check_blocks(op, blocks, ggml_type);
  TORCH_CHECK_VALUE(blocks.dim() == 2 && blocks.device().is_cpu() && blocks.size(1) > 0 &&
                        blocks.size(1) % bytes == 0,
                    op, ": blocks must be a CPU tensor [N, K / 32 * ", bytes,
                    "] (each row whole blocks of ", bytes, " bytes), got ", blocks.sizes());
  const int64_t N = blocks.size(0), per_row = blocks.size(1) / bytes, K = 32 * per_row;
  const at::Tensor src = blocks.contiguous();
  const uint8_t* sp = src.data_ptr<uint8_t>();
  if (ggml_type == kernels::kGgufQ8_0) {
    at::Tensor q = at::empty({N, K}, blocks.options().dtype(at::kChar));
    at::Tensor scales = at::empty({N, per_row}, blocks.options().dtype(at::kFloat));
    kernels::gguf_q8_0_to_int8(sp, N, per_row, q.data_ptr<int8_t>(), scales.data_ptr<float>());
    return {q, scales};
  }
  // row-major first, then the 16-row tiles of int4_layout.h for both tensors
  at::Tensor rows_packed = at::empty({N, K / 2}, blocks.options());
  at::Tensor rows_sz = at::empty({N, per_row, 2}, blocks.options().dtype(at::kFloat));
  kernels::gguf_q4_to_int4_rows(sp, N, per_row, ggml_type,
                                reinterpret_cast<uint32_t*>(rows_packed.data_ptr<uint8_t>()),
                                rows_sz.data_ptr<float>());
  return tile_int4(rows_packed, rows_sz);
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("dequantize_gguf", &dequantize_gguf);
  m.impl("repack_gguf", &repack_gguf);
}

}  // namespace fastdecode::cpu
