"""fp16 KV caches (``Transformer.kv_cache_dtype``, the server's default): what setup_caches
allocates, the memory it counts, the decode paths reading them, and the quality they keep on
the default model against fp32 caches."""
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode.evaluate import perplexity
from fastdecode.memory import decode_bytes, kv_bytes_per_position

TEXT = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1.txt"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64, torch.int8, "float16"])
def test_only_the_activations_dtype_or_fp16_is_taken(dtype):
    model = tiny_model()
    with pytest.raises(ValueError, match="kv_cache_dtype must be None, torch.float32"):
        model.kv_cache_dtype = dtype
    assert model.kv_cache_dtype is None


def test_setup_caches_allocates_the_dtype_and_reallocates_when_it_changes():
    model = tiny_model()
    model.setup_caches(2, 16)
    fp32 = model.layers[0].attention.kv_cache
    assert fp32.k_cache.dtype == fp32.v_cache.dtype == model.cache_dtype == torch.float32
    model.kv_cache_dtype = torch.float16
    model.setup_caches(2, 16)  # same size, another dtype: new caches
    fp16 = model.layers[0].attention.kv_cache
    assert fp16 is not fp32 and fp16.k_cache.dtype == fp16.v_cache.dtype == torch.float16
    assert model.cache_dtype == torch.float16
    model.setup_caches(1, 16)  # smaller, same dtype: kept
    assert model.layers[0].attention.kv_cache is fp16
    model.kv_cache_dtype = torch.float32  # the activations' dtype, named: as None
    model.setup_caches(1, 16)
    assert model.layers[0].attention.kv_cache.k_cache.dtype == torch.float32


def test_fp16_caches_count_half_the_kv_bytes():
    model = tiny_model()
    fp32 = kv_bytes_per_position(model)
    rows, positions = 4, 64
    others = decode_bytes(model, rows, positions) - rows * positions * fp32
    model.kv_cache_dtype = torch.float16
    assert 2 * kv_bytes_per_position(model) == fp32
    assert decode_bytes(model, rows, positions) == others + rows * positions * fp32 // 2


def test_generate_with_fp16_caches_decodes_as_the_module_path_does():
    """The fused step and the module path over fp16 caches give the same greedy tokens, close
    to those over fp32 caches (a tiny random model: the logits, not the tokens, compared)."""
    model = tiny_model(seed=4)
    prompt = torch.randint(0, 101, (2, 6))
    runs = {}
    for dtype, fused in ((None, True), (torch.float16, True), (torch.float16, False)):
        model.kv_cache_dtype = dtype
        fastdecode.fuse(model) if fused else fastdecode.unfuse(model)
        with torch.no_grad():
            model.setup_caches(2, 16)
            logits = [model(prompt, torch.arange(6))[:, -1]]
            tok = logits[0].argmax(-1, keepdim=True)
            for i in range(6):
                logits.append(model(tok, torch.tensor([6 + i]))[:, -1])
                tok = logits[-1].argmax(-1, keepdim=True)
        runs[dtype, fused] = torch.stack(logits, 1)
        assert model.cache_dtype == (dtype or torch.float32)
    fastdecode.fuse(model)
    fp16 = runs[torch.float16, True]
    assert torch.equal(fp16.argmax(-1), runs[torch.float16, False].argmax(-1))
    torch.testing.assert_close(fp16, runs[torch.float16, False], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(fp16, runs[None, True], rtol=1e-2, atol=1e-2)


@pytest.fixture(scope="module")
def default_model():
    return fastdecode.load("default")


@pytest.mark.parametrize("fused", [True, False])
def test_fp16_caches_keep_the_default_models_perplexity(default_model, fused):
    """The first chapter of Pride and Prejudice (the benchmark's text, 462 tokens) fed 16 at a
    time, through the fused decode step or the modules: fp16 caches move the perplexity by
    under 2% (measured: +0.84% fused, -0.01% modules; this quantized model's 8-bit
    activations turn any rounding change into logit moves of ~1, and the two fp32 paths
    differ by 0.6%). A misread or misrounded cache moves it by far more."""
    model, tok = default_model
    ids = torch.tensor(tok.encode(TEXT.read_text()))
    fastdecode.fuse(model) if fused else fastdecode.unfuse(model)
    try:
        fp32 = perplexity(model, ids, chunk=16)
        model.kv_cache_dtype = torch.float16
        fp16 = perplexity(model, ids, chunk=16)
        assert model.layers[0].attention.kv_cache.k_cache.dtype == torch.float16
    finally:
        model.kv_cache_dtype = None
        fastdecode.fuse(model)
    assert fp16 != fp32  # the caches did change the arithmetic
    assert abs(fp16 / fp32 - 1) < 0.02, (fp32, fp16)


def test_the_servers_auto_kv_cache_dtype_is_fp16_where_the_path_converts_in_hardware():
    from fastdecode.server.run import kv_cache_dtype_of

    for isa in ("avx512", "avx2", "neon"):
        assert kv_cache_dtype_of("auto", isa) == torch.float16
        assert kv_cache_dtype_of("float32", isa) is None
    # the portable path converts in software: attention over fp16 caches ~18x slower there
    assert kv_cache_dtype_of("auto", "scalar") is None
    assert kv_cache_dtype_of("float16", "scalar") == torch.float16
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of auto, float16, "
                                         "float32, got 'bfloat16'"):
        kv_cache_dtype_of("bfloat16", "avx2")
