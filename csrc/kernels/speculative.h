// Torch-free acceptance step of speculative sampling (Leviathan et al. 2023, Chen et al. 2023)
// for one batch row.
//
// The draft proposed tokens d_0..d_{k-1}, drawn from its distributions p_i; the target's
// distributions q_0..q_k come from one forward pass over [cur, d_0..d_{k-1}]. Token d_i is
// accepted with probability min(1, q_i(d_i) / p_i(d_i)); at the first rejection one token is
// drawn from norm(max(q_i - p_i, 0)); if all k are accepted a bonus token is drawn from q_k.
// The tokens that come out are distributed exactly as sampling from the target step by step.
#pragma once

#include <cstdint>

#include "kernels/sampling.h"  // inverse_cdf_sample

namespace fastdecode::kernels {

// Same draw from the residual max(q - p, 0) (not normalised); when the residual is all zero
// (q == p wherever q > p could hold) the draw falls back to q itself.
int64_t residual_sample(const float* q, const float* p, int64_t V, double u);

// One row. draft_tokens [k] in [0, V); p [k, V] draft probabilities; q [k + 1, V] target
// probabilities; u [k + 1] uniforms in [0, 1): u[i] decides draft token i, u[k] the final
// draw. Writes tokens [k + 1] (accepted drafts, then the resampled or bonus token, then -1)
// and returns the number of accepted draft tokens (0..k).
int64_t speculative_accept_row(const int64_t* draft_tokens, int64_t k, const float* p,
                               const float* q, int64_t V, const double* u, int64_t* tokens);

}  // namespace fastdecode::kernels
