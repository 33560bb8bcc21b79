"""Quantized models end to end on the default model: perplexity against fp32, GGUF blocks
loaded without a float round trip, the quantize tool's checkpoints, bad arguments."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from conftest import assert_greedy_agrees_up_to_a_near_tie

import fastdecode
from fastdecode.quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear, quantize_model
from fastdecode.quantized_checkpoint import save_quantized

TEXT = (Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1.txt").read_text()


def perplexity(model, tokenizer, chunk: int = 0) -> float:
    return fastdecode.evaluate.perplexity(model, torch.tensor(tokenizer.encode(TEXT)), chunk)


def test_perplexity_checks_its_arguments(default_model):
    model, _ = default_model
    with pytest.raises(ValueError, match="at least 2 tokens"):
        fastdecode.evaluate.perplexity(model, torch.tensor([1]))
    with pytest.raises(ValueError, match="chunk must be >= 0"):
        fastdecode.evaluate.perplexity(model, torch.tensor([1, 2, 3]), -1)


@pytest.fixture(scope="module")
def fp32_ppl(default_model):
    return perplexity(*default_model)


def _fresh_default():
    return fastdecode.load("default", quantized=False)


def test_int8_perplexity_within_1_percent(fp32_ppl):
    model, tok = _fresh_default()
    quantize_model(model, "int8")  # groups of 32 by default
    assert isinstance(model.output, WeightOnlyInt8Linear) and model.output.groupsize == 32
    for chunk in (0, 16):  # the GEMM path and the GEMV path
        ppl = perplexity(model, tok, chunk)
        assert abs(ppl / fp32_ppl - 1) < 0.01, (chunk, ppl, fp32_ppl)


def test_int8_per_channel_is_available(fp32_ppl):
    model, tok = _fresh_default()
    quantize_model(model, "int8", None)
    assert model.layers[0].attention.wqkv.scales.shape == (960,)
    assert abs(perplexity(model, tok) / fp32_ppl - 1) < 0.03


def test_int4_perplexity_within_5_percent(fp32_ppl):
    model, tok = _fresh_default()
    quantize_model(model, "int4")  # groups of 32, int8 head
    assert isinstance(model.layers[0].feed_forward.w2, WeightOnlyInt4Linear)
    assert isinstance(model.output, WeightOnlyInt8Linear)
    for chunk in (0, 16):
        ppl = perplexity(model, tok, chunk)
        assert abs(ppl / fp32_ppl - 1) < 0.05, (chunk, ppl, fp32_ppl)


def test_gguf_blocks_load_quantized_and_match_fp32(default_model, fp32_ppl):
    model, tok = fastdecode.load("default", quantized=True)
    att = model.layers[0].attention
    assert isinstance(att.wqkv, WeightOnlyInt4Linear) and att.wqkv.groupsize == 32
    assert isinstance(model.output, WeightOnlyInt8Linear) and model.output.groupsize == 32
    # Q4_1 is exactly int4 with groupsize 32: on the dequantise-then-GEMM path (an unfused
    # model's linears given more rows than the integer kernels take) the logits equal fp32
    # up to rounding; the fused GEMV calls, which read every prompt of a fused quantized
    # model 32 positions at a time, add the 8-bit rounding of the activations (measured: the
    # largest logit difference 6% of the largest logit over 40 positions; 2.3-5.2% over four
    # prompts of 5-7 tokens, the extreme of ~250k differences moving with the last bits of
    # the attention sums)
    ref = default_model[0]
    rows = fastdecode._C.quantized_gemv_max_rows + 8
    long_ids = torch.tensor([tok.encode(TEXT)[:rows]])
    assert long_ids.shape[1] == rows
    ids = torch.tensor([tok.encode("The capital of France is")])
    unfused = fastdecode.load("default", quantized=True)[0]
    fastdecode.unfuse(unfused)
    with torch.no_grad():
        for m, prompt, share in ((unfused, long_ids, 3e-5), (model, long_ids, 0.1),
                                 (model, ids, 0.08)):
            pos = torch.arange(prompt.shape[1])
            m.setup_caches(1, prompt.shape[1])
            ref.setup_caches(1, prompt.shape[1])
            want = ref(prompt, pos)
            torch.testing.assert_close(m(prompt, pos), want, rtol=0,
                                       atol=share * want.abs().max().item())
    # (as test_default_fast_path: within 0.5%; slices of the text land 0.3-1.1% either side,
    # the 8-bit rounding's noise, so a tighter bound would test the last bits of a sum order)
    assert abs(perplexity(model, tok) / fp32_ppl - 1) < 5e-3
    assert_greedy_agrees_up_to_a_near_tie(model, ref, ids[0], 32)


def test_save_and_load_quantized_checkpoint(tmp_path):
    model, tok = _fresh_default()
    quantize_model(model, "int4", 64, head_int8=False)
    save_quantized(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded, tok2 = fastdecode.load(tmp_path)
    assert isinstance(loaded.layers[3].attention.wo, WeightOnlyInt4Linear)
    assert isinstance(loaded.output, WeightOnlyInt4Linear)
    ids = torch.tensor(tok.encode("Once upon a time"))
    a, _ = fastdecode.generate(model, ids, 12, temperature=0)
    b, _ = fastdecode.generate(loaded, ids, 12, temperature=0)
    assert torch.equal(a, b)
    # a checkpoint of the row-major int4 format (version 1) is refused, not misread
    meta_path = tmp_path / "fastdecode.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 1, this fastdecode reads versions 2, 3"):
        fastdecode.load(tmp_path)


def test_int8_checkpoint_tiled_and_row_major(tmp_path):
    """An int8 model is held tiled after quantizing and after loading; a checkpoint saved
    tiled (version 3: uint8 weights) and one of row-major int8 (as version 2 stored them)
    load to the same tokens, tiled."""
    model, tok = _fresh_default()
    quantize_model(model, "int8", 32)
    int8 = [m for m in model.modules() if isinstance(m, fastdecode.WeightOnlyInt8Linear)]
    assert int8 and all(m.tiled for m in int8)
    ids = torch.tensor(tok.encode("Once upon a time"))
    want, _ = fastdecode.generate(model, ids, 12, temperature=0)
    save_quantized(model, tok, tmp_path / "tiled")
    with pytest.warns(UserWarning, match="module by module"):  # a fused model's weights
        for m in int8:
            m.untile_()
    assert not any(m.tiled for m in int8)
    row_major, _ = fastdecode.generate(model, ids, 12, temperature=0)
    save_quantized(model, tok, tmp_path / "rows")
    meta_path = tmp_path / "rows" / "fastdecode.json"
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == 3
    meta["version"] = 2
    meta_path.write_text(json.dumps(meta))
    for name, dtype in (("tiled", torch.uint8), ("rows", torch.int8)):
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            assert f.get_tensor("output.weight").dtype == dtype, name
    for name in ("tiled", "rows"):
        loaded, _ = fastdecode.load(tmp_path / name)
        assert loaded.layers[0].attention.wqkv.tiled and loaded.output.tiled
        got, _ = fastdecode.generate(loaded, ids, 12, temperature=0)
        assert torch.equal(got, want), name
    # the two layouts' sums differ only in float order: the same greedy tokens here
    assert torch.equal(row_major, want)


def test_bf16_activations_keep_fp32_scales():
    model, tok = fastdecode.load("default", quantized=True, precision=torch.bfloat16)
    assert model.output.scales.dtype == torch.float32
    # the quantized embedding keeps its table and returns bf16 activations
    assert model.tok_embeddings.scales.dtype == torch.float32
    assert model.tok_embeddings(torch.tensor([1, 2])).dtype == torch.bfloat16
    seq, _ = fastdecode.generate(model, torch.tensor(tok.encode("Hello")), 4, temperature=0)
    assert seq.shape == (1, 5)


def test_quantize_cli_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "int8"
    r = subprocess.run([sys.executable, "-m", "fastdecode", "quantize", "--checkpoint", "default",
                        "--mode", "int8", "--out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "fastdecode", "generate", "--checkpoint", str(out),
                        "--prompt", "The capital of France is", "--max-new-tokens", "6",
                        "--temperature", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


@pytest.mark.parametrize("mode,groupsize,match", [("int3", 128, "mode must be"),
                                                  ("int4", 100, "groupsize must be one of")])
def test_quantize_model_bad_arguments(mode, groupsize, match):
    model = fastdecode.Transformer(fastdecode.ModelArgs(n_layer=1, n_head=2, dim=64,
                                                        vocab_size=50, block_size=16))
    with pytest.raises(ValueError, match=match):
        quantize_model(model, mode, groupsize)


def test_quantized_flag_needs_a_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="quantized=True reads the quantized tensors"):
        fastdecode.load(tmp_path, quantized=True)


def test_perplexity_windows_scores_the_second_half_of_each_window(default_model):
    """llama-perplexity's measure: windows from an empty cache, second halves scored."""
    model, tok = default_model
    ids = torch.tensor(tok.encode(TEXT))[:100]
    ppl, windows = fastdecode.evaluate.perplexity_windows(model, ids, 32)
    assert windows == 3  # the 4 tokens past the last full window are not read
    total = 0.0
    with torch.no_grad():
        for w in range(3):
            window = ids[w * 32:(w + 1) * 32][None]
            model.setup_caches(1, 32)
            logits = model(window, torch.arange(32))
            total += float(torch.nn.functional.cross_entropy(
                logits[0, 16:31], window[0, 17:], reduction="sum"))
    assert abs(ppl / torch.tensor(total / 45).exp().item() - 1) < 1e-6
    chunked, _ = fastdecode.evaluate.perplexity_windows(model, ids, 32, chunk=16)
    assert abs(chunked / ppl - 1) < 1e-4
    with pytest.raises(ValueError, match="n_ctx must be"):
        fastdecode.evaluate.perplexity_windows(model, ids, 2)
    with pytest.raises(ValueError, match="fewer than one window"):
        fastdecode.evaluate.perplexity_windows(model, ids[:20], 32)

