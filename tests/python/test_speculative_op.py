"""fastdecode::speculative_accept: parity with the float64 oracle under fixed uniforms,
greedy (one-hot) behaviour, the statistics of the generator path, opcheck, bad input."""
import pytest
import torch
from reference.speculative import speculative_accept_ref

from fastdecode import ops


def _case(bsz, k, vocab, seed, sparse=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(bsz, k, vocab, generator=g) * 2, -1)
    q = torch.softmax(torch.randn(bsz, k + 1, vocab, generator=g) * 2, -1)
    if sparse:  # zero out parts of both supports: disjoint mass, zero residuals
        p = p * (torch.rand(p.shape, generator=g) > 0.5)
        q = q * (torch.rand(q.shape, generator=g) > 0.5)
        p[..., 0] += 1e-3
        q[..., 1] += 1e-3
    d = torch.multinomial(p.view(-1, vocab) + 1e-12, 1, generator=g).view(bsz, k)
    u = torch.rand(bsz, k + 1, generator=g, dtype=torch.float64)
    return d, p, q, u


@pytest.mark.parametrize("bsz,k,vocab", [(1, 1, 16), (3, 4, 16), (2, 8, 257), (4, 0, 33)])
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_oracle_with_fixed_uniforms(bsz, k, vocab, sparse):
    for seed in range(5):
        d, p, q, u = _case(bsz, k, vocab, seed, sparse)
        got = ops.speculative_accept(d, p, q, uniforms=u)
        want = speculative_accept_ref(d, p, q, u)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (seed, got, want)


def test_greedy_accepts_exactly_the_agreeing_prefix():
    vocab = 16
    target_argmax = torch.tensor([[3, 7, 7, 1, 0, 9], [2, 2, 2, 2, 2, 2]])
    drafts = torch.tensor([[3, 7, 8, 1, 0], [2, 2, 2, 2, 2]])
    q = torch.nn.functional.one_hot(target_argmax, vocab).float()
    p = torch.nn.functional.one_hot(drafts, vocab).float()
    for seed in range(10):
        tokens, n = ops.speculative_accept(drafts, p, q, torch.Generator().manual_seed(seed))
        assert n.tolist() == [2, 5]
        assert tokens.tolist() == [[3, 7, 7, -1, -1, -1], [2, 2, 2, 2, 2, 2]]


def test_first_token_distribution_is_the_target():
    """Over many draws the first output token of a row is distributed as q_0, whatever p is
    (the defining property of speculative sampling), here with a draft that puts most of its
    mass where the target has little."""
    vocab, k, n = 8, 2, 40000
    q0 = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0])
    p0 = torch.tensor([0.02, 0.02, 0.02, 0.02, 0.02, 0.1, 0.1, 0.7])
    gen = torch.Generator().manual_seed(1)
    d0 = torch.multinomial(p0, n, replacement=True, generator=gen)
    d = torch.stack([d0, torch.zeros_like(d0)], 1)
    p = torch.stack([p0, torch.full((vocab,), 1 / vocab)]).expand(n, k, vocab)
    q = torch.stack([q0, q0, q0]).expand(n, k + 1, vocab)
    tokens, _ = ops.speculative_accept(d, p, q, gen)
    counts = torch.bincount(tokens[:, 0], minlength=vocab).double()
    expected = q0.double() * n
    support = expected > 0
    assert counts[~support].sum() == 0
    chi2 = (((counts - expected)[support]) ** 2 / expected[support]).sum()
    assert chi2 < 24.3, chi2  # chi-square, 6 degrees of freedom, p = 0.9995


def test_generator_reproducible_and_dtypes():
    d, p, q, _ = _case(3, 4, 40, 0)
    a = ops.speculative_accept(d, p, q, torch.Generator().manual_seed(5))
    b = ops.speculative_accept(d.int(), p.bfloat16().float(), q, torch.Generator().manual_seed(5))
    c = ops.speculative_accept(d, p, q, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], c[0]) and a[0].dtype == torch.int64 and a[1].dtype == torch.int64
    assert b[0].shape == (3, 5)


def test_opcheck():
    d, p, q, u = _case(2, 3, 16, 0)
    torch.library.opcheck(torch.ops.fastdecode.speculative_accept.default, (d, p, q),
                          {"uniforms": u})


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda d, p, q: (d, p, q[:, :-1]), ValueError, "target_probs must be"),
    (lambda d, p, q: (d, p[:, :, :-1], q), ValueError, "vocabularies differ"),
    (lambda d, p, q: (d[:, :-1], p, q), ValueError, "target_probs must be"),
    (lambda d, p, q: (d + 100, p, q), ValueError, r"draft_tokens must be in \[0, V\)"),
    (lambda d, p, q: (d.float(), p, q), TypeError, "int64 or int32"),
    (lambda d, p, q: (d, p, torch.zeros_like(q)), ValueError, "positive sum"),
    (lambda d, p, q: (d, -p, q), ValueError, "finite probabilities"),
    (lambda d, p, q: (d, p, q * float("nan")), ValueError, "finite probabilities"),
])
def test_bad_input(mutate, exc, match):
    d, p, q, _ = _case(2, 3, 16, 0)
    with pytest.raises(exc, match=match):
        ops.speculative_accept(*mutate(d, p, q))


def test_bad_uniforms():
    d, p, q, u = _case(2, 3, 16, 0)
    with pytest.raises(ValueError, match=r"uniforms must lie in \[0, 1\)"):
        ops.speculative_accept(d, p, q, uniforms=u + 1)
    with pytest.raises(ValueError, match="uniforms must be"):
        ops.speculative_accept(d, p, q, uniforms=u[:, :2])


def test_compile_fullgraph_around_the_op():
    d, p, q, u = _case(2, 3, 16, 1)

    def step(d, p, q, u):
        tokens, n = ops.speculative_accept(d, p, q, uniforms=u)
        return tokens + 1, n * 2

    got = torch.compile(step, fullgraph=True, backend="aot_eager")(d, p, q, u)
    want = step(d, p, q, u)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
