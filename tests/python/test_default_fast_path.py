"""The default is the fast path: a GGUF checkpoint loads in its own blocks (``load``,
``LLM``, the CLI, so ``make demo``), and that quantized default decodes like its dequantised
fp32 twin (greedy agreement over 300 tokens, perplexity within 0.5%)."""
from pathlib import Path

import pytest
import torch
from conftest import assert_greedy_agrees_up_to_a_near_tie, fused_calls

import fastdecode
from fastdecode import cli
from fastdecode.quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear, quantize_model

TEXT = (Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1.txt").read_text()
PROMPT = "The three most important inventions of the last century are"


@pytest.fixture(scope="module")
def gguf_default():
    return fastdecode.load("default")


def _is_gguf_blocks(model) -> bool:
    return (isinstance(model.layers[0].attention.wqkv, WeightOnlyInt4Linear)
            and isinstance(model.output, WeightOnlyInt8Linear)
            and model.decode_path == "fused")


def test_load_llm_and_cli_default_to_the_gguf_blocks(gguf_default):
    assert _is_gguf_blocks(gguf_default[0])
    assert _is_gguf_blocks(fastdecode.LLM("default").model)
    args = cli._build_parser().parse_args(["generate", "--prompt", "x"])
    assert args.quantized is None  # load's default: the checkpoint's own precision
    args = cli._build_parser().parse_args(["generate", "--prompt", "x", "--dequantize"])
    assert args.quantized is False
    fp32 = fastdecode.LLM("default", quantize="float").model
    assert isinstance(fp32.layers[0].attention.wqkv, torch.nn.Linear)
    with pytest.raises(ValueError, match="quantized must be None"):
        fastdecode.load("default", quantized="yes")


def test_requantizing_the_gguf_blocks_says_how(gguf_default):
    model = fastdecode.load("default")[0]
    with pytest.raises(ValueError, match="quantized=False"):
        quantize_model(model, "int8")


def test_the_quantized_default_decodes_like_its_fp32_twin(gguf_default, default_model):
    """Greedy: the fp32 twin's 300 tokens, fed to the quantized default one decode step at a
    time (the GEMV path), are its own argmax at >= 99% of the positions; free-running over
    48 tokens, the two agree up to a near tie of the twin's (this prompt holds one, 0.05
    apart, at the 14th token: which side wins moves with the last bits of the kernels' sums)."""
    quant, tok = gguf_default
    twin = default_model[0]
    ids = torch.tensor(tok.encode(PROMPT))
    ref = fastdecode.generate(twin, ids, 300, temperature=0)[0].reshape(-1)
    T = ids.shape[0]
    with torch.no_grad():
        quant.setup_caches(1, ref.shape[0])
        logits = quant(ref[None, :T], torch.arange(T), last_only=True)
        agree = int(logits[0, -1].argmax() == ref[T])
        for i in range(T, ref.shape[0] - 1):
            logits = quant(ref[None, i:i + 1], torch.tensor([i]))
            agree += int(logits[0, -1].argmax() == ref[i + 1])
    assert agree / 300 >= 0.99, agree
    assert_greedy_agrees_up_to_a_near_tie(quant, twin, ids, 48)


def test_the_quantized_default_perplexity_is_within_half_a_percent(gguf_default, default_model):
    ids = torch.tensor(gguf_default[1].encode(TEXT))
    ours = fastdecode.evaluate.perplexity(gguf_default[0], ids)
    twin = fastdecode.evaluate.perplexity(default_model[0], ids)
    assert abs(ours / twin - 1) < 0.005, (ours, twin)


def test_a_prompt_in_chunks_runs_the_head_once_for_its_last_position(gguf_default):
    """A quantized fused model reads a prompt 32 positions a call; with last_only only the
    last position's logits are wanted, so the head (49152 x 576) runs once, on one row, and
    ``head=False`` (the engine's chunks before a prompt's last) fills the cache without it.
    The cache and the last logits do not depend on where the prompt is cut."""
    model, tok = gguf_default
    ids = torch.tensor([tok.encode(" ".join(["word"] * 70))])
    T = ids.shape[1]
    assert T > 2 * 32
    chunks = -(-T // 32)
    with torch.no_grad():
        model.setup_caches(1, T)
        with fused_calls() as seen:  # the head runs inside ops.decode_step only
            last = model(ids, torch.arange(T), last_only=True)
        assert [op for op, _ in seen] == ["layers"] * (chunks - 1) + ["step"]
        assert last.shape == (1, 1, model.config.vocab_size)
        cache = model.layers[-1].attention.kv_cache.k_cache.clone()
        with fused_calls() as seen:
            assert model(ids[:, :40], torch.arange(40), head=False) is None
        assert [op for op, _ in seen] == ["layers", "layers"]
        again = model(ids[:, 40:], torch.arange(40, T), last_only=True)
    assert torch.equal(model.layers[-1].attention.kv_cache.k_cache, cache)
    assert torch.equal(last, again)
