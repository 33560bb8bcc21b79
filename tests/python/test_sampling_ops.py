"""fastdecode::logits_to_probs and fastdecode::multinomial_sample_one_no_sync against the
oracles in tests/reference: every knob combination, several vocabularies, dtypes, ties,
-inf, per-row knobs; opcheck, torch.compile and bad input."""
import itertools

import pytest
import torch
from conftest import TOLERANCES
from reference.sampling import logits_to_probs_ref, multinomial_sample_one_no_sync_ref

import fastdecode
from fastdecode import ops

KNOBS = dict(temperature=[0.0, 0.7, 1.3], top_k=[None, 1, 7, 50], top_p=[1.0, 0.9, 0.5],
             min_p=[0.0, 0.05], repetition_penalty=[1.0, 1.3, 0.8])
COMBOS = [dict(zip(KNOBS, values)) for values in itertools.product(*KNOBS.values())]


def _case(shape, seed, dtype=torch.float32, n_prev=6):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g) * 3).to(dtype)
    prev_shape = (n_prev,) if len(shape) == 1 else (shape[0], n_prev)
    prev = torch.randint(0, shape[-1], prev_shape, generator=g)
    return logits, prev


def _check(logits, prev, knobs, dtype=torch.float32):
    got = ops.logits_to_probs(logits, prev, **knobs)
    want = logits_to_probs_ref(logits, prev, **knobs)
    assert got.shape == logits.shape and got.dtype == logits.dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("knobs", COMBOS, ids=lambda k: "-".join(f"{v}" for v in k.values()))
@pytest.mark.parametrize("shape", [(7,), (4, 1000)])
def test_every_knob_combination_matches_reference(shape, knobs):
    logits, prev = _case(shape, seed=len(str(knobs)) + shape[-1])
    _check(logits, prev, knobs)


@pytest.mark.parametrize("vocab", [1, 2, 31, 32000, 49152, 128256])
@pytest.mark.parametrize("knobs", [
    dict(temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2),
    dict(temperature=1.0, top_p=0.95, min_p=0.02),
    dict(temperature=0.6),
])
def test_vocab_sizes(vocab, knobs):
    logits, prev = _case((2, vocab), seed=vocab, n_prev=min(vocab, 64))
    _check(logits, prev, knobs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("knobs", COMBOS[::17], ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_half_precision_logits(dtype, knobs):
    logits, prev = _case((3, 500), seed=11, dtype=dtype)
    _check(logits, prev, knobs, dtype)


def test_per_row_knobs_match_row_by_row_scalars():
    logits, prev = _case((4, 300), seed=5)
    per_row = dict(temperature=torch.tensor([0.0, 0.5, 1.0, 2.0]),
                   top_k=torch.tensor([0, 3, 50, 299]), top_p=torch.tensor([1.0, 0.9, 0.3, 0.7]),
                   min_p=torch.tensor([0.0, 0.1, 0.0, 0.2]),
                   repetition_penalty=torch.tensor([1.0, 1.5, 0.9, 1.1]))
    got = ops.logits_to_probs(logits, prev, **per_row)
    for r in range(4):
        scalars = {k: (v[r].item() if k != "top_k" else int(v[r])) for k, v in per_row.items()}
        want = ops.logits_to_probs(logits[r], prev[r], **scalars)
        torch.testing.assert_close(got[r], want)
    torch.testing.assert_close(got, logits_to_probs_ref(logits, prev, **per_row),
                               rtol=1e-5, atol=1e-6)
    # a 0-d tensor applies to every row
    torch.testing.assert_close(ops.logits_to_probs(logits, temperature=torch.tensor(0.7)),
                               ops.logits_to_probs(logits, temperature=0.7))


def test_ties_and_minus_inf():
    logits = torch.tensor([1.0, 3.0, 3.0, -float("inf"), 2.0, 3.0, 0.5])
    # the 2nd largest value is 3.0, held by three entries: all three are kept, evenly
    got = ops.logits_to_probs(logits, top_k=2)
    torch.testing.assert_close(got, torch.tensor([0, 1 / 3, 1 / 3, 0, 0, 1 / 3, 0]))
    # top-p crossing inside a tie keeps the whole tie
    torch.testing.assert_close(ops.logits_to_probs(logits, top_p=0.2), got)
    for knobs in COMBOS[::5]:
        _check(logits, torch.tensor([1, 1, 4]), knobs)
    assert ops.logits_to_probs(logits)[3] == 0


def test_repetition_penalty_hits_each_distinct_id_once():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.0])
    once = ops.logits_to_probs(logits, torch.tensor([0, 1]), repetition_penalty=2.0)
    many = ops.logits_to_probs(logits, torch.tensor([0, 1, 0, 0, 1]), repetition_penalty=2.0)
    torch.testing.assert_close(once, many)
    torch.testing.assert_close(once, torch.softmax(torch.tensor([1.0, -4.0, 1.0, 0.0]), -1))
    assert torch.equal(logits, torch.tensor([2.0, -2.0, 1.0, 0.0]))  # input untouched


def test_greedy_follows_the_penalised_argmax():
    logits = torch.tensor([[0.5, 2.0, 1.9, -1.0]])
    idx, probs = fastdecode.sample(logits, torch.tensor([[1]]), temperature=0,
                                   repetition_penalty=1.1)
    assert idx.tolist() == [[2]] and probs.tolist() == [[0, 0, 1, 0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_temperature_zero_is_one_hot_at_first_argmax(dtype):
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0], [9.0, 1.0, 9.0, 9.0]], dtype=dtype)
    probs = ops.logits_to_probs(logits, temperature=0.0)
    assert probs.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    idx, probs2 = fastdecode.sample(logits, temperature=0.0)
    assert idx.tolist() == [[1], [0]] and torch.equal(probs, probs2)


@pytest.mark.parametrize("shape", [(5,), (1, 49152), (4, 1000), (3, 1)])
def test_multinomial_same_index_as_reference_with_same_noise(shape):
    probs = torch.softmax(torch.randn(shape) * 3, -1)
    for seed in range(20):
        noise = torch.empty_like(probs).exponential_(1, generator=torch.Generator().manual_seed(seed))
        got = ops.multinomial_sample_one_no_sync(probs, noise=noise)
        want = multinomial_sample_one_no_sync_ref(probs, torch.Generator().manual_seed(seed))
        assert got.dtype == torch.int32 and got.shape == (*shape[:-1], 1)
        assert torch.equal(got, want)


def test_multinomial_noise_shape_is_checked():
    with pytest.raises(ValueError, match="noise must have the shape of probs"):
        ops.multinomial_sample_one_no_sync(torch.rand(2, 5), noise=torch.rand(2, 4))


def test_multinomial_uses_default_generator_when_none():
    probs = torch.softmax(torch.randn(4, 300), -1)
    torch.manual_seed(123)
    a = ops.multinomial_sample_one_no_sync(probs)
    torch.manual_seed(123)
    b = ops.multinomial_sample_one_no_sync(probs)
    assert torch.equal(a, b)


def test_agent_variants_are_batch_first():
    logits, prev = _case((3, 2, 64), seed=2)[0], torch.randint(0, 64, (3, 5))
    knobs = dict(temperature=0.7, top_p=0.8, repetition_penalty=1.4)
    torch.testing.assert_close(fastdecode.logits_to_probs_agent(logits[:, -1], prev, **knobs),
                               ops.logits_to_probs(logits[:, -1], prev, **knobs))
    g1, g2 = (torch.Generator().manual_seed(9) for _ in range(2))
    a = fastdecode.sample_agent(logits, prev, generator=g1, **knobs)
    b = fastdecode.sample(logits, prev, generator=g2, **knobs)
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 1)
    assert fastdecode.multinomial_sample_one_no_sync_agent(torch.eye(4)[[2, 0]]).tolist() == [[2], [0]]
    with pytest.raises(ValueError, match="batch-first"):
        fastdecode.logits_to_probs_agent(logits[0, -1])
    with pytest.raises(ValueError, match="batch-first"):
        fastdecode.sample_agent(logits, prev[0])


# -- opcheck / compile ---------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs", [
    ((torch.randn(10),), {}),
    ((torch.randn(3, 50), torch.randint(0, 50, (3, 4)), 0.5, 5, 0.9, 0.05, 1.2), {}),
    ((torch.randn(2, 9), None, 0.0), {}),
    ((torch.randn(4, 33).to(torch.bfloat16), None, 1.2, 3), {}),
    ((torch.randn(2, 40), torch.randint(0, 40, (6,))),
     {"row_params": torch.tensor([[0.7, 5, 0.9, 0.0, 1.1], [1.0, 0, 1.0, 0.1, 1.0]])}),
])
def test_opcheck_logits_to_probs(args, kwargs):
    torch.library.opcheck(torch.ops.fastdecode.logits_to_probs.default, args, kwargs)


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
    def step(logits, prev, temperature):
        probs = ops.logits_to_probs(logits * 2.0, prev, temperature=temperature, top_k=8,
                                    top_p=0.9, min_p=0.01, repetition_penalty=1.2)
        return ops.multinomial_sample_one_no_sync(probs), probs

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    logits, prev = torch.randn(3, 100), torch.randint(0, 100, (3, 7))
    temps = torch.tensor([0.5, 0.9, 1.1])
    torch.manual_seed(1)
    idx, probs = compiled(logits, prev, temps)
    torch.manual_seed(1)
    ref_idx, ref_probs = step(logits, prev, temps)
    torch.testing.assert_close(probs, ref_probs)
    assert torch.equal(idx, ref_idx)


# -- argmax_token (the greedy pick) ----------------------------------------------------------

@pytest.mark.parametrize("shape", [(7,), (1, 128256), (5, 1000), (3, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_argmax_token_equals_torch_argmax(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    scores = (torch.randn(shape, generator=g) * 4).to(dtype)
    scores[..., -1] = float("-inf")
    got = ops.argmax_token(scores)
    assert got.dtype == torch.int32 and got.shape == (*shape[:-1], 1)
    assert torch.equal(got.long(), torch.argmax(scores, -1, keepdim=True))


def test_argmax_token_first_of_ties_and_all_minus_inf():
    scores = torch.zeros(2, 40)
    scores[0, [5, 17, 33]] = 3.0  # ties: the first index, as torch.argmax
    scores[1] = float("-inf")
    assert ops.argmax_token(scores).flatten().tolist() == [5, 0]


def test_argmax_token_opcheck_compile_and_nan():
    torch.library.opcheck(torch.ops.fastdecode.argmax_token.default, (torch.randn(4, 33),))
    compiled = torch.compile(lambda x: ops.argmax_token(x * 2.0), fullgraph=True,
                             backend="aot_eager")
    x = torch.randn(3, 50)
    assert torch.equal(compiled(x), ops.argmax_token(x))
    x[1, 7] = float("nan")
    with pytest.raises(ValueError, match="argmax_token: scores row 1 contains NaN"):
        ops.argmax_token(x)
    with pytest.raises(ValueError, match="argmax_token: scores must have shape"):
        ops.argmax_token(torch.randn(2, 3, 4))


# -- bad input -----------------------------------------------------------------------------

V10 = torch.randn(10)


# A wrong dtype (or a non-tensor) is a TypeError, every other bad argument a ValueError.
_TYPE_ERRORS = ("integer token ids", "float32, bfloat16 or float16", "probs must be",
                "must be a torch.Tensor")


@pytest.mark.parametrize("call,match", [
    (lambda: ops.logits_to_probs(V10, temperature=-0.5), r"temperature must be .* >= 0"),
    (lambda: ops.logits_to_probs(V10, temperature=float("nan")), "temperature"),
    (lambda: ops.logits_to_probs(V10, top_k=-1), "top_k"),
    (lambda: ops.logits_to_probs(V10, top_p=0.0), r"top_p must be in \(0, 1\]"),
    (lambda: ops.logits_to_probs(V10, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (lambda: ops.logits_to_probs(V10, min_p=1.0), r"min_p must be in \[0, 1\)"),
    (lambda: ops.logits_to_probs(V10, min_p=-0.1), r"min_p must be in \[0, 1\)"),
    (lambda: ops.logits_to_probs(V10, repetition_penalty=0.0), "repetition_penalty"),
    (lambda: ops.logits_to_probs(V10, repetition_penalty=-1.0), "repetition_penalty"),
    (lambda: ops.logits_to_probs(torch.randn(2, 10), top_p=torch.tensor([0.5, 0.0])),
     r"top_p \(row 1\) must be in \(0, 1\]"),
    (lambda: ops.logits_to_probs(torch.randn(2, 10), top_k=torch.tensor([2.5, 1.0])), "top_k"),
    (lambda: ops.logits_to_probs(V10, torch.tensor([3, 10])), r"ids must be in \[0, 10\)"),
    (lambda: ops.logits_to_probs(V10, torch.tensor([-1])), r"ids must be in \[0, 10\)"),
    (lambda: ops.logits_to_probs(V10, torch.tensor([1.0])), "integer token ids"),
    (lambda: ops.logits_to_probs(torch.randn(2, 10), torch.zeros(3, 2, dtype=torch.long)),
     r"previous_tokens must have shape \[T\] or \[B, T\]"),
    (lambda: ops.logits_to_probs(torch.randn(2, 3, 4)), r"logits must have shape \[V\] or \[B, V\]"),
    (lambda: ops.logits_to_probs(torch.randn(3, 0)), "non-empty"),
    (lambda: ops.logits_to_probs(torch.arange(10)), "float32, bfloat16 or float16"),
    (lambda: ops.logits_to_probs(torch.tensor([0.0, float("nan")])), "NaN"),
    (lambda: ops.logits_to_probs(torch.full((4,), -float("inf"))), "no finite maximum"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.rand(2, 2, 2)), "probs must have shape"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.ones(3, dtype=torch.int64)), "probs must be"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.zeros(2, 5)), "no positive entry"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.tensor([0.5, float("nan")])),
     "NaN or infinity"),
    (lambda: ops.multinomial_sample_one_no_sync(torch.tensor([0.5, -0.1])), "negative"),
    (lambda: ops.multinomial_sample_one_no_sync(None), "probs must be a torch.Tensor"),
])
def test_bad_input_raises_clear_error(call, match):
    type_error = any(key in match for key in _TYPE_ERRORS)
    with pytest.raises(TypeError if type_error else ValueError, match=match):
        call()


def test_per_row_knob_with_wrong_length_is_rejected():
    with pytest.raises(ValueError, match=r"temperature must be a scalar or a per-row tensor"):
        ops.logits_to_probs(torch.randn(2, 10), temperature=torch.tensor([1.0, 1.0, 1.0]))


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"temperature": -1}, ValueError, "temperature"),
    ({"temperature": torch.tensor([1.0, -1.0])}, ValueError, "temperature"),
    ({"top_k": -3}, ValueError, "top_k"),
    ({"top_k": 2.5}, ValueError, "top_k"),
    ({"top_p": 0}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.01}, ValueError, "top_p"),
    ({"min_p": 1}, ValueError, r"min_p must be in \[0, 1\)"),
    ({"repetition_penalty": 0}, ValueError, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, ValueError, "repetition_penalty"),
    ({"generator": 3}, ValueError, "generator"),
    ({"top_q": 0.5}, TypeError, "top_q"),
])
def test_sampling_kwargs_validated_by_name(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastdecode.sampling.validate_sampling_kwargs(kwargs, batch_size=2)
