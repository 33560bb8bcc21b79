// How a linear's tensors are passed to fastdecode::decode_layer: one kind per linear, each
// followed by its tensors. The values are part of the op's schema (int[] kinds) and reach
// Python as _C.linear_kinds (fastdecode.model.LinearKind), so they are defined here only.
#pragma once

#include <cstdint>

namespace fastdecode::cpu {

enum LinearKind : int64_t {
  kFloat32 = 0,  // [weight fp32 [N, K]]
  kInt8 = 1,     // [weight int8 [N, K], scales fp32 [N] or [N, K / G]]
  kInt4 = 2,     // [packed uint8 [N, K_pad / 2], scales_and_zeros fp32 [N, K_pad / G, 2]]
};

}  // namespace fastdecode::cpu
