"""Float64 oracle of speculative sampling's acceptance step, written from the rule in the
issue and the seed (004): keep draft token i while u_i < q_i(d_i) / p_i(d_i); at the first
rejection draw from norm(max(q_i - p_i, 0)); after k acceptances draw from q_k. Draws are
inverse-CDF with the row's last uniform, so fixed uniforms make the result deterministic."""
import torch


def _inverse_cdf(w: torch.Tensor, u: float) -> int:
    """Smallest j with cumsum(w)[j] > u * sum(w), among indices with w > 0."""
    cdf = torch.cumsum(w, 0)
    hits = ((cdf > u * cdf[-1]) & (w > 0)).nonzero()
    return int(hits[0]) if len(hits) else int((w > 0).nonzero()[-1])


def speculative_accept_ref(draft_tokens, draft_probs, target_probs, uniforms):
    """draft_tokens [B, k], draft_probs [B, k, V], target_probs [B, k + 1, V],
    uniforms [B, k + 1] -> (tokens [B, k + 1] padded with -1, num_accepted [B])."""
    bsz, k = draft_tokens.shape
    tokens = torch.full((bsz, k + 1), -1, dtype=torch.int64)
    accepted = torch.zeros(bsz, dtype=torch.int64)
    p_all, q_all = draft_probs.double(), target_probs.double()
    for b in range(bsz):
        u = uniforms[b].double()
        for i in range(k):
            d = int(draft_tokens[b, i])
            p, q = p_all[b, i], q_all[b, i]
            if p[d] == 0 and q[d] > 0 or u[i] < q[d] / p[d]:
                tokens[b, i] = d
                continue
            residual = torch.clamp(q - p, min=0)
            w = residual if residual.sum() > 0 else q
            tokens[b, i] = _inverse_cdf(w, float(u[k]))
            accepted[b] = i
            break
        else:
            tokens[b, k] = _inverse_cdf(q_all[b, k], float(u[k]))
            accepted[b] = k
    return tokens, accepted
