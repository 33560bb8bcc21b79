#include "kernels/speculative.h"

namespace fastdecode::kernels {

int64_t residual_sample(const float* q, const float* p, int64_t V, double u) {
  double total = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    const double r = static_cast<double>(q[j]) - p[j];
    if (r > 0.0) total += r;
  }
  if (!(total > 0.0)) return inverse_cdf_sample(q, V, u);
  const double threshold = u * total;
  double running = 0.0;
  int64_t last = -1;
  for (int64_t j = 0; j < V; ++j) {
    const double r = static_cast<double>(q[j]) - p[j];
    if (r <= 0.0) continue;
    running += r;
    last = j;
    if (running > threshold) return j;
  }
  return last;
}

int64_t speculative_accept_row(const int64_t* draft_tokens, int64_t k, const float* p,
                               const float* q, int64_t V, const double* u, int64_t* tokens) {
  for (int64_t i = 0; i <= k; ++i) tokens[i] = -1;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t d = draft_tokens[i];
    const double p_d = p[i * V + d], q_d = q[i * V + d];
    // accept with probability min(1, q/p), written without the division: p == 0 (a token
    // the draft could not have drawn) is accepted iff the target gives it mass.
    if (u[i] * p_d < q_d) {
      tokens[i] = d;
      continue;
    }
    tokens[i] = residual_sample(q + i * V, p + i * V, V, u[k]);
    return i;
  }
  tokens[k] = inverse_cdf_sample(q + k * V, V, u[k]);  // all accepted: the bonus token
  return k;
}

}  // namespace fastdecode::kernels
