"""Sampling is tested statistically, never bitwise: frequencies of many draws against the
reference distribution, and support (never a token outside the top-k/top-p/min-p set)."""
import math

import pytest
import torch
from reference.sampling import logits_to_probs_ref

import fastdecode
from fastdecode import ops


def chi_square_p_value(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Upper tail of Pearson's statistic over the cells with expected > 0 (Wilson-Hilferty
    normal approximation of the chi-square distribution)."""
    mask = expected > 0
    assert counts[~mask].sum() == 0, "draws landed on zero-probability tokens"
    stat = float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())
    dof = max(int(mask.sum()) - 1, 1)
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("knobs", [
    dict(temperature=0.8),
    dict(temperature=1.0, top_k=10),
    dict(temperature=1.2, top_p=0.7),
    dict(temperature=0.9, min_p=0.1),
    dict(temperature=1.0, top_k=30, top_p=0.9, min_p=0.02, repetition_penalty=1.5),
])
def test_sample_frequencies_match_reference_distribution(knobs):
    g = torch.Generator().manual_seed(17)
    vocab, draws = 60, 200_000
    logits = torch.randn(vocab, generator=g) * 1.5
    prev = torch.randint(0, vocab, (12,), generator=g)
    want = logits_to_probs_ref(logits, prev, **knobs).double()
    batch = logits.expand(draws, -1).contiguous()
    idx, _ = fastdecode.sample(batch, prev, generator=g, **knobs)
    counts = torch.bincount(idx.view(-1).long(), minlength=vocab).double()
    assert chi_square_p_value(counts, want * draws) > 1e-4
    assert 0.5 * (counts / draws - want).abs().sum() < 0.01  # total variation


def test_support_never_leaves_the_filtered_set():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 500, generator=g) * 2
    prev = torch.randint(0, 500, (64, 20), generator=g)
    knobs = dict(temperature=1.5, top_k=25, top_p=0.8, min_p=0.03, repetition_penalty=1.3)
    allowed = logits_to_probs_ref(logits, prev, **knobs) > 0
    for _ in range(100):
        idx, probs = fastdecode.sample(logits, prev, generator=g, **knobs)
        assert allowed.gather(1, idx.long()).all()
        assert torch.equal(probs > 0, allowed)


def test_seeded_generators_reproduce_and_differ():
    logits = torch.randn(8, 1000)
    draw = lambda seed: fastdecode.sample(logits, temperature=1.0, top_p=0.95,  # noqa: E731
                                          generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_multinomial_frequencies_match_unnormalised_weights():
    g = torch.Generator().manual_seed(7)
    weights = torch.rand(40, generator=g) * 5  # need not sum to 1
    n = 200_000
    draws = ops.multinomial_sample_one_no_sync(weights.expand(n, -1).contiguous(), g).view(-1)
    counts = torch.bincount(draws.long(), minlength=40).double()
    assert chi_square_p_value(counts, weights.double() / weights.sum() * n) > 1e-4
