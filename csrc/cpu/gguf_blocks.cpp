// fastdecode::dequantize_gguf on the CPU: checks, then the block decoder over row chunks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "kernels/gguf_blocks.h"

namespace fastdecode::cpu {

at::Tensor dequantize_gguf(const at::Tensor& blocks, int64_t ggml_type) {
  constexpr const char* op = "fastdecode::dequantize_gguf";
  const int64_t bytes = kernels::gguf_block_bytes(ggml_type);
  TORCH_CHECK_VALUE(bytes > 0, op, ": ggml_type must be 2 (Q4_0), 3 (Q4_1) or 8 (Q8_0), got ",
                    ggml_type);
  TORCH_CHECK_TYPE(blocks.scalar_type() == at::kByte, op, ": blocks must be uint8, got ",
                   blocks.scalar_type());
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

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) { m.impl("dequantize_gguf", &dequantize_gguf); }

}  // namespace fastdecode::cpu
