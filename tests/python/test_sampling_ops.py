"""fastdecode::logits_to_probs and fastdecode::multinomial_sample_one_no_sync against the
oracles in tests/reference, plus statistics, opcheck, torch.compile and bad input."""
import math

import pytest
import torch
from conftest import TOLERANCES
from reference.sampling import logits_to_probs_ref, multinomial_sample_one_no_sync_ref

import fastdecode
from fastdecode import ops

VOCABS = [1, 7, 100, 1000, 49152]
SHAPES = [(v,) for v in VOCABS] + [(3, 17), (8, 32000)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.9, 1e-3])
@pytest.mark.parametrize("top_k", [None, 0, 1, 5, 50])
def test_logits_to_probs_matches_reference(shape, dtype, temperature, top_k):
    g = torch.Generator().manual_seed(hash((shape, temperature, top_k)) % 2**31)
    logits = (torch.randn(shape, generator=g) * 4).to(dtype)
    got = ops.logits_to_probs(logits, temperature, top_k)
    want = logits_to_probs_ref(logits, temperature, top_k)
    assert got.shape == logits.shape and got.dtype == dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_top_k_keeps_ties_and_minus_inf():
    logits = torch.tensor([1.0, 3.0, 3.0, -float("inf"), 2.0, 3.0, 0.5])
    got = ops.logits_to_probs(logits, 1.0, 2)
    # the 2nd largest value is 3.0, held by three entries: all three are kept, evenly
    torch.testing.assert_close(got, torch.tensor([0, 1 / 3, 1 / 3, 0, 0, 1 / 3, 0]))
    torch.testing.assert_close(ops.logits_to_probs(logits), logits_to_probs_ref(logits))
    assert ops.logits_to_probs(logits)[3] == 0


def test_top_k_at_least_vocab_keeps_everything():
    logits = torch.randn(2, 10)
    for k in (10, 11, 10_000):
        torch.testing.assert_close(ops.logits_to_probs(logits, 1.0, k),
                                   torch.softmax(logits, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_temperature_zero_is_one_hot_at_first_argmax(dtype):
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0], [9.0, 1.0, 9.0, 9.0]], dtype=dtype)
    probs = ops.logits_to_probs(logits, 0.0, None)
    assert probs.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    idx, probs2 = fastdecode.sample(logits, temperature=0.0)
    assert idx.tolist() == [[1], [0]] and torch.equal(probs, probs2)


@pytest.mark.parametrize("shape", [(5,), (1, 49152), (4, 1000), (3, 1)])
def test_multinomial_same_index_as_reference_with_same_noise(shape):
    probs = torch.softmax(torch.randn(shape) * 3, -1)
    for seed in range(20):
        got = ops.multinomial_sample_one_no_sync(probs, torch.Generator().manual_seed(seed))
        want = multinomial_sample_one_no_sync_ref(probs, torch.Generator().manual_seed(seed))
        assert got.dtype == torch.int32 and got.shape == (*shape[:-1], 1)
        assert torch.equal(got, want)


def test_multinomial_uses_default_generator_when_none():
    probs = torch.softmax(torch.randn(4, 300), -1)
    torch.manual_seed(123)
    a = ops.multinomial_sample_one_no_sync(probs)
    torch.manual_seed(123)
    b = ops.multinomial_sample_one_no_sync(probs)
    assert torch.equal(a, b)


def _chi_square_p_value(counts, expected):
    """Upper tail of the chi-square statistic (Wilson-Hilferty normal approximation)."""
    mask = expected > 0
    stat = float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())
    dof = int(mask.sum()) - 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_multinomial_frequencies_match_distribution():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(50, generator=g) * 1.5
    probs = ops.logits_to_probs(logits, 0.8, None)
    n = 200_000
    draws = ops.multinomial_sample_one_no_sync(probs.expand(n, -1).contiguous(), g).view(-1)
    counts = torch.bincount(draws.long(), minlength=50).double()
    expected = probs.double() * n
    assert _chi_square_p_value(counts, expected) > 1e-4
    tv = 0.5 * (counts / n - probs.double()).abs().sum()
    assert tv < 0.01


def test_sampling_with_top_k_never_leaves_the_top_k_set():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 500, generator=g)
    topk = set()
    for row in range(64):
        topk.add(frozenset(torch.topk(logits[row], 10).indices.tolist()))
    for _ in range(50):
        idx, _ = fastdecode.sample(logits, temperature=1.5, top_k=10, generator=g)
        for row in range(64):
            kept = torch.topk(logits[row], 10).indices
            assert int(idx[row]) in kept.tolist()


def test_seeded_generator_reproduces():
    logits = torch.randn(4, 1000)
    a = fastdecode.sample(logits, temperature=1.0, top_k=40,
                          generator=torch.Generator().manual_seed(5))[0]
    b = fastdecode.sample(logits, temperature=1.0, top_k=40,
                          generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


# -- opcheck / compile ---------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    (torch.randn(10), 1.0, None), (torch.randn(3, 50), 0.5, 5), (torch.randn(2, 9), 0.0, None),
    (torch.randn(4, 33).to(torch.bfloat16), 1.2, 3),
])
def test_opcheck_logits_to_probs(args):
    torch.library.opcheck(torch.ops.fastdecode.logits_to_probs.default, args)


# One-hot rows: the draw is then the same whatever the noise, so opcheck's eager-vs-traced
# comparisons of this random op are meaningful.
@pytest.mark.parametrize("probs", [torch.eye(10)[3], torch.eye(50)[[0, 49, 7]] * 0.3])
def test_opcheck_multinomial(probs):
    torch.library.opcheck(torch.ops.fastdecode.multinomial_sample_one_no_sync.default,
                          (probs, torch.Generator().manual_seed(0)))
    torch.library.opcheck(torch.ops.fastdecode.multinomial_sample_one_no_sync.default, (probs,))


def test_compile_fullgraph_around_sampling_ops():
    # Dynamo cannot take a torch.Generator argument, so compiled code draws from the global
    # generator (seeded with torch.manual_seed); the op consumes it exactly as in eager mode.
    def step(logits):
        probs = ops.logits_to_probs(logits * 2.0, 0.9, 8)
        return ops.multinomial_sample_one_no_sync(probs), probs

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    logits = torch.randn(3, 100)
    torch.manual_seed(1)
    idx, probs = compiled(logits)
    torch.manual_seed(1)
    ref_idx, ref_probs = step(logits)
    torch.testing.assert_close(probs, ref_probs)
    assert torch.equal(idx, ref_idx)


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: ops.logits_to_probs(torch.randn(10), -0.5), "temperature"),
    (lambda: ops.logits_to_probs(torch.randn(10), float("nan")), "temperature"),
    (lambda: ops.logits_to_probs(torch.randn(10), 1.0, -1), "top_k"),
    (lambda: ops.logits_to_probs(torch.randn(2, 3, 4)), r"logits must have shape \[V\] or \[B, V\]"),
    (lambda: ops.logits_to_probs(torch.randn(3, 0)), "non-empty"),
    (lambda: ops.logits_to_probs(torch.arange(10)), "float32, bfloat16 or float16"),
    (lambda: ops.logits_to_probs(torch.tensor([0.0, float("nan")])), "NaN"),
    (lambda: ops.logits_to_probs(torch.full((4,), -float("inf"))), "no finite maximum"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.rand(2, 2, 2)), "probs must have shape"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.ones(3, dtype=torch.int64)), "probs must be"),
])
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"temperature": -1}, ValueError, "temperature"),
    ({"top_k": -3}, ValueError, "top_k"),
    ({"top_k": 2.5}, ValueError, "top_k"),
    ({"generator": 3}, ValueError, "generator"),
    ({"top_q": 0.5}, TypeError, "top_q"),
])
def test_sampling_kwargs_validated_by_name(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastdecode.sampling.validate_sampling_kwargs(kwargs)
