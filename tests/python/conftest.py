"""Shared fixtures: the default model is loaded once per session (a few seconds), and the
Hugging Face peer on the same GGUF once for the parity tests."""
import contextlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # `import reference`

import fastdecode  # noqa: E402



def pytest_report_header(config):
    info = fastdecode.build_info()
    return (f"fastdecode kernel path: {info['active_isa']} (this CPU runs "
            f"{info['supported_isas']}; FASTDECODE_ISA picks one)")


# dtype -> (rtol, atol) for float comparisons against the oracles.
TOLERANCES = {
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-3),
    torch.float16: (2e-3, 1e-4),
}


# Two logits this close are a tie that the 8-bit activations' rounding may break either
# way: over the 300 teacher-forced positions of test_default_fast_path, the quantized default
# model moves the gap between its fp32 twin's top two logits by 0.09 (median), 0.23 (p90),
# 0.42-0.45 (p99), 0.57-0.72 at most, whatever the order of the kernels' float sums.
NEAR_TIE = 0.5


def assert_greedy_agrees_up_to_a_near_tie(model, twin, ids: torch.Tensor, n: int) -> None:
    """Free-running greedy over n tokens: a quantized model and its fp32 twin pick the same
    tokens up to the first position where the twin's top two logits are within NEAR_TIE, and
    there the quantized model takes the twin's second choice (past it the texts differ)."""
    ours = fastdecode.generate(model, ids, n, temperature=0)[0].reshape(-1)
    ref = fastdecode.generate(twin, ids, n, temperature=0)[0].reshape(-1)
    differ = (ours != ref).nonzero()
    if len(differ):
        i = int(differ[0])
        with torch.no_grad():
            twin.setup_caches(1, i)
            top2 = twin(ref[None, :i], torch.arange(i), last_only=True)[0, -1].topk(2)
        gap = float(top2.values[0] - top2.values[1])
        assert gap < NEAR_TIE, f"token {i - ids.shape[-1]} differs where the twin's gap is {gap}"
        assert ours[i] == top2.indices[1], (i - ids.shape[-1], top2, ours[i])


@pytest.fixture(scope="session")
def default_model():
    torch.manual_seed(0)
    model, tokenizer = fastdecode.load("default", device="cpu", precision=torch.float32,
                                       quantized=False)  # fp32: the HF parity path
    return model, tokenizer


@pytest.fixture(scope="session")
def hf_model():
    import transformers  # a test dependency: missing means the run fails, never skips
    path = fastdecode.default_checkpoint_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens
    return model


def tiny_args(**overrides):
    """A small random Llama (GQA, odd vocab) for tests that need many models or odd shapes."""
    base = dict(block_size=64, vocab_size=101, n_layer=2, n_head=4, n_local_heads=2, dim=32,
                intermediate_size=48, rope_base=10000.0, norm_eps=1e-5)
    base.update(overrides)
    return fastdecode.ModelArgs(**base)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = fastdecode.Transformer(tiny_args(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    fastdecode.fuse(model)  # as the loader does: decode steps run ops.decode_step
    return model.eval()


@contextlib.contextmanager
def fused_calls():
    """Records the fused C++ calls models make inside the block: yields a list that fills
    with ("step" or "layers", x.shape) per call of ops.decode_step (layers, final norm and
    head) or ops.decode_layers (the layers alone), as fastdecode.fusion calls them."""
    from fastdecode import fusion

    seen, step, layers = [], fusion._decode_step, fusion._decode_layers
    fusion._decode_step = lambda *a: seen.append(("step", tuple(a[0].shape))) or step(*a)
    fusion._decode_layers = lambda *a: seen.append(("layers", tuple(a[0].shape))) or layers(*a)
    try:
        yield seen
    finally:
        fusion._decode_step, fusion._decode_layers = step, layers
