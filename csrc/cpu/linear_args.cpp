#include "cpu/linear_args.h"

#include <optional>

#include "cpu/linear_kind.h"
#include "cpu/ops.h"

namespace fastdecode::cpu {

int64_t check_linear(const char* name, const LinearArgs& l, int64_t in) {
  const at::Tensor& w = *l.t[0];
  const LinearShape shape = l.kind == kInt8   ? int8_linear_shape(name, w, *l.t[1])
                            : l.kind == kInt4 ? int4_linear_shape(name, w, *l.t[1], l.groupsize)
                                              : dense_linear_shape(name, w);
  TORCH_CHECK_TYPE(l.kind != kFloat32 || w.scalar_type() == at::kFloat, name,
                   ": the fp32 weight must be float32, got ", w.scalar_type());
  TORCH_CHECK_VALUE(in >= shape.in_min && in <= shape.in_max, name, ": takes ", shape.in_max,
                    " in-features", l.kind == kInt4 ? " (padded to its group)" : "",
                    ", the layer gives it ", in);
  return shape.out_features;
}

at::Tensor apply_linear(const LinearArgs& l, const at::Tensor& x) {
  switch (l.kind) {
    case kInt8:
      return cpu::int8_linear(x, *l.t[0], *l.t[1], std::nullopt);
    case kInt4:
      return cpu::int4_linear(x, *l.t[0], *l.t[1], l.groupsize, std::nullopt);
    default:
      return cpu::linear(x, *l.t[0], std::nullopt);  // (not at::linear)
  }
}

}  // namespace fastdecode::cpu
