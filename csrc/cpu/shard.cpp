// Tensor-parallel sharding on the CPU: fastdecode::shard (slices of a row-major tensor) and
// fastdecode::shard_int4 (rows or K-columns of a tiled int4 weight and its group scales).
// A rank's part is a list of [offset, offset + length) ranges along one dimension, cut and
// concatenated in order: the fused wqkv weight gives one range per q / k / v segment.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/int4_layout.h"

namespace fastdecode::cpu {
namespace {

// Ranges non-empty, inside [0, extent) and as many offsets as lengths; returns their total.
int64_t check_ranges(const char* op, const char* unit, at::IntArrayRef offsets,
                     at::IntArrayRef lengths, int64_t extent, int64_t align) {
  TORCH_CHECK_VALUE(!offsets.empty() && offsets.size() == lengths.size(), op,
                    ": offsets and lengths must be non-empty lists of equal length, got ",
                    offsets.size(), " and ", lengths.size());
  int64_t total = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    const int64_t o = offsets[i], l = lengths[i];
    TORCH_CHECK_VALUE(l >= 1 && o >= 0 && o <= extent - l, op, ": range ", i, " [", o, ", ",
                      o + l, ") must be non-empty and inside [0, ", extent, ") ", unit);
    TORCH_CHECK_VALUE(o % align == 0 && l % align == 0, op, ": range ", i, " [", o, ", ", o + l,
                      ") must start and end on a multiple of ", align, " ", unit,
                      " (a quantization group)");
    total += l;
  }
  return total;
}

}  // namespace

at::Tensor shard(const at::Tensor& t, int64_t dim, at::IntArrayRef offsets,
                 at::IntArrayRef lengths) {
  constexpr const char* op = "fastdecode::shard";
  TORCH_CHECK_VALUE(t.dim() >= 1 && dim >= 0 && dim < t.dim(), op, ": dim must be in [0, ",
                    t.dim(), ") for a tensor of shape ", t.sizes(), ", got ", dim);
  check_ranges(op, "entries", offsets, lengths, t.size(dim), 1);
  std::vector<at::Tensor> parts;
  parts.reserve(offsets.size());
  for (size_t i = 0; i < offsets.size(); ++i) parts.push_back(t.narrow(dim, offsets[i], lengths[i]));
  return at::cat(parts, dim).contiguous();
}

std::tuple<at::Tensor, at::Tensor> shard_int4(const at::Tensor& packed,
                                              const at::Tensor& scales_and_zeros,
                                              int64_t groupsize, int64_t dim,
                                              at::IntArrayRef offsets, at::IntArrayRef lengths) {
  constexpr const char* op = "fastdecode::shard_int4";
  TORCH_CHECK_VALUE(kernels::is_int4_groupsize(groupsize), op,
                    ": groupsize must be one of ", kernels::int4_groupsizes_text(),
                    ", got ", groupsize);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte, op, ": packed must be uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_TYPE(scales_and_zeros.scalar_type() == at::kFloat, op,
                   ": scales_and_zeros must be float32, got ", scales_and_zeros.scalar_type());
  TORCH_CHECK_VALUE(packed.device().is_cpu() && scales_and_zeros.device().is_cpu(), op,
                    ": packed and scales_and_zeros must be CPU tensors");
  TORCH_CHECK_VALUE(packed.dim() == 2 && packed.size(1) % (groupsize / 2) == 0, op,
                    ": packed must be [N, K_pad / 2] with K_pad a multiple of groupsize ",
                    groupsize, ", got ", packed.sizes());
  const int64_t N = packed.size(0), K = packed.size(1) * 2, groups = K / groupsize;
  TORCH_CHECK_VALUE(scales_and_zeros.dim() == 3 && scales_and_zeros.size(0) == N &&
                        scales_and_zeros.size(1) == groups && scales_and_zeros.size(2) == 2,
                    op, ": scales_and_zeros must be [N, K_pad / groupsize, 2] = [", N, ", ",
                    groups, ", 2], got ", scales_and_zeros.sizes());
  TORCH_CHECK_VALUE(dim == 0 || dim == 1, op, ": dim must be 0 (output rows) or 1 (input "
                    "columns), got ", dim);
  const int64_t total = check_ranges(op, dim == 0 ? "rows" : "columns", offsets, lengths,
                                     dim == 0 ? N : K, dim == 0 ? 1 : groupsize);
  // Both tensors are 16-row tiles of 32-bit words: untile, cut in row-major word space, tile.
  const int64_t C = K / 8, Cs = groups * 2;  // words per row: 8 nibbles / a scale or zero
  const int64_t N_out = dim == 0 ? total : N;
  const int64_t C_out = dim == 0 ? C : total / 8, Cs_out = dim == 0 ? Cs : total / groupsize * 2;
  at::Tensor out_packed = at::empty({N_out, C_out * 4}, packed.options());
  at::Tensor out_sz = at::empty({N_out, Cs_out / 2, 2}, scales_and_zeros.options());
  auto cut = [&](const at::Tensor& tiled, int64_t words, int64_t words_per_unit_num,
                 int64_t words_per_unit_den, int64_t out_words, at::Tensor& out) {
    std::vector<uint32_t> rows(N * words), picked(N_out * out_words);
    // a named tensor: the pointer must not outlive the contiguous copy it points into
    const at::Tensor tiled_c = tiled.contiguous();
    const auto* src = reinterpret_cast<const uint32_t*>(tiled_c.data_ptr());
    kernels::untile_words(src, N, words, rows.data());
    int64_t at_ = 0;  // next output row (dim 0) or word column (dim 1)
    for (size_t i = 0; i < offsets.size(); ++i) {
      if (dim == 0) {
        std::memcpy(picked.data() + at_ * words, rows.data() + offsets[i] * words,
                    lengths[i] * words * sizeof(uint32_t));
        at_ += lengths[i];
      } else {
        const int64_t w0 = offsets[i] * words_per_unit_num / words_per_unit_den;
        const int64_t wn = lengths[i] * words_per_unit_num / words_per_unit_den;
        for (int64_t n = 0; n < N; ++n) {
          std::memcpy(picked.data() + n * out_words + at_, rows.data() + n * words + w0,
                      wn * sizeof(uint32_t));
        }
        at_ += wn;
      }
    }
    kernels::tile_words(picked.data(), N_out, out_words, reinterpret_cast<uint32_t*>(out.data_ptr()));
  };
  cut(packed, C, 1, 8, C_out, out_packed);                      // 8 values a word
  cut(scales_and_zeros, Cs, 2, groupsize, Cs_out, out_sz);      // 2 words a group
  return {out_packed, out_sz};
}

TORCH_LIBRARY_IMPL(fastdecode, CPU, m) {
  m.impl("shard", &shard);
  m.impl("shard_int4", &shard_int4);
}

}  // namespace fastdecode::cpu
