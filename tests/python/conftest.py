"""Shared fixtures: the default model is loaded once per session (a few seconds), and the
Hugging Face peer on the same GGUF once for the parity tests."""
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
    fastdecode.fuse(model)  # as the loader does: decode steps run ops.decode_layers
    return model.eval()
