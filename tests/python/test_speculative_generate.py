"""generate(draft_model=..., speculate_k=...): greedy output identical to plain decoding on
the default model (quantized and early-exit drafts, batches 1 and 4), the sampled output
distributed as the target's (chi-square over 20k rows, including a draft whose support is
disjoint from the target's), the edge cases of the issue and the validation rules."""
import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import generate
from fastdecode.speculative import early_exit_draft, quantized_draft

PROMPTS = ["The three most important inventions of the last century are",
           "Once upon a time, in a small village by the sea,",
           "def fibonacci(n):"]


@pytest.fixture(scope="module")
def drafts(default_model):
    model, _ = default_model
    return {"int8": quantized_draft(model, "int8"), "int4": quantized_draft(model, "int4")}


@pytest.mark.parametrize("k", [1, 4, 8])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_speculative_equals_plain_on_default_model(default_model, drafts, prompt, k):
    model, tok = default_model
    ids = torch.tensor(tok.encode(prompt))
    plain, _ = generate(model, ids, 24, temperature=0)
    spec, info = generate(model, ids, 24, temperature=0, draft_model=drafts["int4"],
                          speculate_k=k)
    assert torch.equal(spec, plain)
    counts = info["accept_counts"]
    assert len(counts) == k + 1 and sum(counts) >= 23 // (k + 1)
    assert sum((a + 1) * c for a, c in enumerate(counts)) >= 23  # rounds cover every token


@pytest.mark.parametrize("draft_name", ["int8", "self", "early_exit"])
def test_greedy_speculative_batch_of_four(default_model, drafts, draft_name):
    model, tok = default_model
    rows = [tok.encode(p)[:8] for p in PROMPTS] + [tok.encode("Water boils at")[:8]]
    rows = torch.tensor([r + [r[-1]] * (8 - len(r)) for r in rows])
    draft = {"self": model, "early_exit": early_exit_draft(model, 10)}.get(draft_name)
    draft = draft or drafts[draft_name]
    plain, _ = generate(model, rows, 20, temperature=0)
    spec, info = generate(model, rows, 20, temperature=0, draft_model=draft, speculate_k=4)
    assert torch.equal(spec, plain)
    if draft_name == "self":  # a model always agrees with itself
        assert info["accept_counts"][:-1] == [0, 0, 0, 0]


class _Masked(fastdecode.Transformer):
    """A model whose logits outside ``allowed`` are -inf: a controlled support."""

    allowed: torch.Tensor

    def forward(self, idx, input_pos, last_only=False):
        logits = super().forward(idx, input_pos, last_only)
        return logits.masked_fill(~self.allowed, float("-inf"))


def _masked(seed, allowed):
    model = tiny_model(seed=seed, vocab_size=16)
    model.__class__ = _Masked
    model.allowed = allowed
    return model


def _target_second_token_marginal(model, prompt):
    """P(token T+1) = sum over t of P(t | prompt) P(. | prompt, t), at temperature 1."""
    with torch.no_grad():
        model.setup_caches(1, len(prompt) + 2)
        p1 = torch.softmax(model(prompt.view(1, -1), torch.arange(len(prompt)))[0, -1].double(), -1)
        marginal = torch.zeros(16, dtype=torch.float64)
        for t in range(16):
            if p1[t] > 0:
                ids = torch.cat([prompt, torch.tensor([t])]).view(1, -1)
                p2 = torch.softmax(model(ids, torch.arange(len(prompt) + 1))[0, -1].double(), -1)
                marginal += p1[t] * p2
    return p1, marginal


@pytest.mark.parametrize("draft_support", ["overlapping", "disjoint"])
def test_sampled_tokens_follow_the_target_distribution(draft_support):
    everything = torch.ones(16, dtype=torch.bool)
    low = torch.arange(16) < 8
    target = _masked(1, low if draft_support == "disjoint" else everything)
    draft = _masked(2, ~low if draft_support == "disjoint" else everything)
    prompt = torch.tensor([3, 9, 4])
    n = 20000
    seq, info = generate(target, prompt, 3, batch_size=n, draft_model=draft, speculate_k=2,
                         generator=torch.Generator().manual_seed(11))
    if draft_support == "disjoint":  # every draft is rejected
        assert info["accept_counts"][1:] == [0, 0]
    p1, p2 = _target_second_token_marginal(target, prompt)
    for column, expected_p in ((3, p1), (4, p2)):
        counts = torch.bincount(seq[:, column], minlength=16).double()
        expected = expected_p * n
        assert counts[expected == 0].sum() == 0  # never outside the target's support
        cells = expected >= 5
        chi2 = ((counts[cells] - expected[cells]) ** 2 / expected[cells]).sum()
        dof = int(cells.sum()) - 1
        # 99.9th percentile of chi-square(dof), Wilson-Hilferty approximation
        z = 3.09
        limit = dof * (1 - 2 / (9 * dof) + z * (2 / (9 * dof)) ** 0.5) ** 3
        assert chi2 < limit, (column, chi2, limit)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=5), tiny_model(seed=6)


def test_speculate_k_zero_is_plain_decoding(tiny):
    model, draft = tiny
    prompt = torch.tensor([1, 2, 3])
    plain, _ = generate(model, prompt, 6, temperature=0)
    spec, info = generate(model, prompt, 6, temperature=0, draft_model=draft, speculate_k=0)
    assert torch.equal(spec, plain) and info["accept_counts"] == [0]


@pytest.mark.parametrize("max_new_tokens,k", [(1, 4), (3, 8), (5, 5), (9, 2)])
def test_k_larger_than_tokens_left_and_one_token(tiny, max_new_tokens, k):
    model, draft = tiny
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    plain, _ = generate(model, prompt, max_new_tokens, temperature=0)
    spec, _ = generate(model, prompt, max_new_tokens, temperature=0, draft_model=draft,
                       speculate_k=k)
    assert torch.equal(spec, plain)


def test_callback_once_per_token_and_eos_per_row(tiny):
    model, draft = tiny
    prompt = torch.tensor([[5, 6, 7], [11, 12, 13], [20, 21, 22]])
    free, _ = generate(model, prompt, 10, temperature=0)
    eos = int(free[0, 6])  # row 0's 4th new token
    plain, _ = generate(model, prompt, 10, temperature=0, eos_id=eos, pad_id=100)
    seen = []
    spec, _ = generate(model, prompt, 10, temperature=0, eos_id=eos, pad_id=100,
                       draft_model=draft, speculate_k=3, callback=seen.append)
    assert torch.equal(spec, plain)
    assert len(seen) == 10 and all(c.shape == (3, 1) for c in seen)
    assert torch.equal(torch.cat(seen, 1), spec[:, 3:])


def test_interactive_speculative():
    model, draft = tiny_model(seed=5, block_size=400), tiny_model(seed=6, block_size=400)
    prompt = torch.tensor([4, 5])
    plain, _ = generate(model, prompt, 12, temperature=0, interactive=True)
    spec, _ = generate(model, prompt, 12, temperature=0, interactive=True, draft_model=draft,
                       speculate_k=4)
    assert torch.equal(spec, plain)
    assert model.max_seq_length == 350


@pytest.mark.parametrize("kwargs,match", [
    (dict(speculate_k=-1), "speculate_k must be an integer >= 0"),
    (dict(draft_model="tiny"), "draft_model must be a fastdecode Transformer"),
    (dict(repetition_penalty=1.2), "repetition_penalty must be 1.0 with speculative"),
])
def test_bad_speculative_arguments(tiny, kwargs, match):
    model, draft = tiny
    kwargs.setdefault("draft_model", draft)
    with pytest.raises(ValueError, match=match):
        generate(model, torch.tensor([1, 2]), 4, **kwargs)


def test_draft_vocab_mismatch_is_rejected(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"vocab_size \(17\) must equal the target's \(101\)"):
        generate(model, torch.tensor([1, 2]), 4, draft_model=tiny_model(vocab_size=17))


def test_early_exit_draft_shares_weights_and_checks_layers(default_model):
    model, _ = default_model
    draft = early_exit_draft(model, 6)
    assert len(draft.layers) == 6 and draft.layers[0] is model.layers[0]
    assert draft.output is model.output and draft.config.n_layer == 6
    with pytest.raises(ValueError, match=r"n_layers must be an integer in \[1, 30\]"):
        early_exit_draft(model, 0)
