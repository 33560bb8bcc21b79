"""The second hardening round (issue 20): one regression test per reproduced failure.
Response sinks that raise or stay full, configs whose sizes or types do not match the file,
models called outside no_grad, attention memory linear in the context, batch and length
bounded by memory, re-entrant decodes, undecodable input, the CLI's devices and output
paths, integers too large for int64, token ids of the wrong type, fish-speech's
``semantic_ids`` keyword, aliased KV caches."""
import json
import queue
import threading
import time

import numpy as np
import pytest
import torch
from conftest import tiny_model
from test_dual_ar import SHAPE, dual_ar, prompt

import fastdecode
from fastdecode import ops
from fastdecode.compat.fish_speech import long_form, serving
from fastdecode.dual_ar_folder import load_codebook_model, save_pretrained
from fastdecode.decode_core import ReentrantDecodeError
from fastdecode.memory import check_decode_memory, decode_bytes


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=5)


# -- 1, 2: response sinks ----------------------------------------------------------------------

class _RaisingSink:
    def __init__(self):
        self.calls = 0

    def put(self, item, block=True, timeout=None):
        self.calls += 1
        raise OSError("handle is closed")


def _request(text="Hi", n=3):
    return {"text": text, "max_new_tokens": n, "temperature": 0.5, "chunk_length": 100}


@pytest.fixture(scope="module")
def text_queue():
    q = serving.launch_thread_safe_queue("default", "cpu", torch.float32)
    yield q
    q.put(None)
    q.worker.join(timeout=30)


def _served(q, request, timeout=60):
    out = queue.Queue()
    q.put(serving.GenerateRequest(request, out))
    items = [out.get(timeout=timeout)]
    while items[-1].status == "success" and items[-1].response.action != "next":
        items.append(out.get(timeout=timeout))
    return items


def test_a_raising_response_queue_cancels_only_its_request(text_queue):
    sink = _RaisingSink()
    text_queue.put(serving.GenerateRequest(_request(), sink))
    items = _served(text_queue, _request())  # the worker is alive and serves the next client
    assert [i.status for i in items] == ["success"] * len(items)
    assert sink.calls >= 1


def test_a_full_response_queue_is_dropped_after_the_timeout(text_queue, monkeypatch):
    monkeypatch.setattr(serving, "RESPONSE_PUT_TIMEOUT_S", 0.2)
    stuck = queue.Queue(maxsize=1)  # nobody reads it: the second put would block forever
    text_queue.put(serving.GenerateRequest(_request(n=6), stuck))
    t0 = time.perf_counter()
    items = _served(text_queue, _request())
    assert time.perf_counter() - t0 < 30
    assert items[-1].status == "success" and stuck.qsize() == 1


# -- 3, 13: codebook folders ------------------------------------------------------------------

def _folder(tmp_path, config_change=None, state_change=None):
    model = dual_ar()
    save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    if config_change is not None:
        cfg = config_change(cfg)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
    if state_change is not None:
        state = torch.load(tmp_path / "model.pth", weights_only=True)
        state_change(state)
        torch.save(state, tmp_path / "model.pth")
    return tmp_path


def test_fish_speech_default_sizes_next_to_a_small_file_allocate_nothing(tmp_path):
    def defaults(cfg):  # the sizes left to fish-speech's defaults: dim 4096, 32 layers
        for key in ("dim", "n_layer", "n_head", "n_local_heads", "head_dim",
                    "intermediate_size", "fast_dim", "fast_n_head", "fast_n_local_heads",
                    "fast_head_dim", "fast_intermediate_size"):
            cfg.pop(key)
        return cfg
    folder = _folder(tmp_path, defaults)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"model\.pth: the config.s n_layer is 32, the file holds 2"):
        load_codebook_model(folder)
    assert time.perf_counter() - t0 < 5  # nothing of the 7 GB model was built


@pytest.mark.parametrize("change,match", [
    (dict(dim="32"), r"config field dim must be an integer, got '32'"),
    (dict(n_layer=2.5), r"config field n_layer must be an integer, got 2.5"),
    (dict(max_seq_len=0), r"max_seq_len must be an integer >= 1, got 0"),
    (dict(n_fast_layer=-1), r"n_fast_layer must be an integer >= 1, got -1"),
    (dict(tie_word_embeddings="no"), r"tie_word_embeddings must be true or false, got 'no'"),
])
def test_codebook_config_types_and_sizes_name_the_file_and_field(tmp_path, change, match):
    folder = _folder(tmp_path, lambda cfg: {**cfg, **change})
    with pytest.raises(ValueError, match=match) as info:
        load_codebook_model(folder)
    assert str(folder / "config.json") in str(info.value)


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.__setitem__("norm.weight", torch.ones(3)), r"norm.weight has shape \(3,\)"),
    (lambda s: s.__setitem__("norm.weight", 7), r"norm.weight must be a tensor, got int"),
    (lambda s: s.pop("norm.weight"), r"tensors missing \['slow.norm.weight'\]"),
])
def test_bad_tensors_in_model_pth_are_value_errors_naming_the_file(tmp_path, edit, match):
    folder = _folder(tmp_path, state_change=edit)
    with pytest.raises(ValueError, match=match) as info:
        load_codebook_model(folder)
    assert str(folder / "model.pth") in str(info.value)


def test_a_good_folder_still_loads_the_same_weights(tmp_path):
    model = dual_ar()
    save_pretrained(model, tmp_path)
    loaded = load_codebook_model(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        if "kv_cache" not in name:
            assert torch.equal(a, b), name
    assert loaded.slow.output.weight is loaded.slow.tok_embeddings.weight


# -- 4: quantized models outside no_grad ----------------------------------------------------------

@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_model_runs_outside_no_grad(mode):
    model = tiny_model(seed=1, dim=64, intermediate_size=96)
    fastdecode.quantize_model(model, mode, groupsize=32)
    model.setup_caches(1, 64)
    ids = torch.randint(0, 101, (1, 40), generator=torch.Generator().manual_seed(0))
    assert torch.is_grad_enabled()
    logits = model(ids, torch.arange(40))  # > 32 rows: the blocked GEMM path
    with torch.no_grad():
        model.setup_caches(1, 64)
        want = model(ids, torch.arange(40))
    torch.testing.assert_close(logits, want)
    nan = torch.full((1, 40, 64), float("nan"))
    out = model.layers[0].attention.wqkv(nan)
    assert torch.isnan(out).all()


# -- 5: attention memory linear in the context -------------------------------------------------

def test_no_L_by_L_mask_and_chunked_prefill_equals_one_pass(tiny, monkeypatch):
    from fastdecode import model as model_module

    ids = torch.randint(0, 101, (2, 50), generator=torch.Generator().manual_seed(2))
    tiny.setup_caches(2, 64)
    whole = tiny(ids, torch.arange(50))
    monkeypatch.setattr(model_module, "PREFILL_CHUNK", 16)  # 50 positions in 4 chunks
    tiny.setup_caches(2, 64)
    chunked = tiny(ids, torch.arange(50))
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    tensors = [v for v in vars(tiny).values() if isinstance(v, torch.Tensor)]
    tensors += list(tiny.buffers())
    assert all(t.numel() < 64 * 64 for t in tensors if t.dim() == 2)


def test_a_long_context_prefill_keeps_memory_linear():
    model = tiny_model(seed=3, block_size=40000)
    model.setup_caches(1, 40000)
    assert model._chunk_positions() * model.config.n_head * 40000 * 4 <= 1 << 26
    mask = model.causal_mask(torch.arange(3), torch.float32)
    assert mask.shape == (1, 1, 3, 40000)  # S x L, never L x L


# -- 8: rows and lengths bounded by memory ------------------------------------------------------

def test_n_beyond_memory_is_refused_before_any_work(default_model):
    llm = fastdecode.LLM.from_model(*default_model)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"needs about .* GiB .* at most \d+ row"):
        llm.generate("Hello", max_tokens=2, n=10 ** 6)
    assert time.perf_counter() - t0 < 2


def test_memory_limit_bounds_generate(tiny, monkeypatch):
    need = decode_bytes(tiny, 4, 20)
    monkeypatch.setenv("FASTDECODE_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(ValueError, match=r"4 row\(s\) x 20 positions .* at most 3 row"):
        fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 17, batch_size=4)
    monkeypatch.setenv("FASTDECODE_MEMORY_LIMIT", str(need))
    check_decode_memory(tiny, 4, 20)


# -- 7: re-entrant decodes ---------------------------------------------------------------------

def test_a_stream_callback_calling_generate_raises_and_the_model_stays_usable(default_model):
    llm = fastdecode.LLM.from_model(*default_model)
    done = []

    def stream(_text):
        llm.generate("x", max_tokens=1)

    def run():
        with pytest.raises(ReentrantDecodeError, match="inside a decode of the same model"):
            llm.generate("Hello", max_tokens=3, stream=stream)
        done.append(llm.generate("Hello", max_tokens=3, temperature=0)["text"])

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and len(done) == 1


def test_generate_from_another_thread_still_waits_its_turn(tiny):
    results = []

    def callback(_tok):
        if not results:
            other = threading.Thread(target=lambda: results.append(
                fastdecode.generate(tiny, torch.tensor([1, 2]), 3, temperature=0)[0]))
            other.start()
            results.append(other)

    fastdecode.generate(tiny, torch.tensor([1, 2]), 3, temperature=0, callback=callback)
    results[0].join(timeout=30)
    assert isinstance(results[1], torch.Tensor)


# -- 9: text that is not valid Unicode ----------------------------------------------------------

def test_lone_surrogates_are_a_value_error(default_model):
    llm = fastdecode.LLM.from_model(*default_model)
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at index 1"):
        llm.generate("a\ud800b", max_tokens=2)


def test_repl_replaces_undecodable_bytes():
    from fastdecode.compat.modularforge import readable_text

    assert readable_text("plain") == ("plain", False)
    text, replaced = readable_text(b"\xff\xfehi".decode("utf-8", "surrogateescape"))
    assert replaced and text == "\ufffd\ufffdhi"
    assert readable_text("a\ud800?") == ("a\ufffd?", True)


# -- 11, 12: integers too large, ids of the wrong type ----------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda m: fastdecode.generate(m, torch.tensor([1]), 2, eos_id=2 ** 63),
     r"eos_id must hold token ids in \[0, 101\)"),
    (lambda m: fastdecode.generate(m, torch.tensor([1]), 2, top_k=2 ** 70),
     r"top_k .* in \[0, 2\^63\)"),
    (lambda m: ops.int4_linear(torch.zeros(1, 32), torch.zeros(8, 16, dtype=torch.uint8),
                               torch.zeros(8, 1, 2), 2 ** 70),
     r"int4_linear: groupsize must fit in a 64-bit integer"),
    (lambda m: long_form.generate(model=m, prompt=torch.tensor([1, 2]), max_new_tokens=2,
                                  im_end_id=2 ** 70),
     r"im_end_id must be a token id in \[0, 101\)"),
])
def test_huge_integers_name_the_argument(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny)


def test_seed_out_of_range_names_the_seed(default_model):
    llm = fastdecode.LLM.from_model(*default_model)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^64|seed must be"):
        llm.generate("Hi", max_tokens=2, seed=2 ** 70)
    with pytest.raises(ValueError, match="seed"):
        llm.generate("Hi", max_tokens=2, seed=-1)


@pytest.mark.parametrize("eos", [np.int64(3), torch.tensor(3), [np.int32(3)],
                                 torch.tensor([3, 5])])
def test_integer_ids_of_any_integer_kind_are_taken(tiny, eos):
    seq, _ = fastdecode.generate(tiny, torch.tensor([1, 2]), 6, temperature=0, eos_id=eos)
    assert seq.shape == (1, 8)


@pytest.mark.parametrize("eos", [1.5, "3", [3.7], True, [True], torch.tensor(3.0), None.__class__])
def test_ids_that_are_not_integers_are_refused(tiny, eos):
    with pytest.raises(ValueError, match="eos_id must be a token id"):
        fastdecode.generate(tiny, torch.tensor([1, 2]), 2, eos_id=eos)


def test_pad_id_takes_integer_kinds_and_refuses_floats(tiny):
    seq, _ = fastdecode.generate(tiny, torch.tensor([1, 2]), 3, eos_id=1, pad_id=np.int64(7))
    assert seq.shape == (1, 5)
    with pytest.raises(ValueError, match="pad_id must be a token id"):
        fastdecode.generate(tiny, torch.tensor([1, 2]), 3, eos_id=1, pad_id=7.0)


def test_semantic_ids_out_of_range_are_refused():
    model = dual_ar()
    with pytest.raises(ValueError, match=r"semantic_ids must be a list of token ids in \[0, 300\)"):
        long_form.generate(model=model, prompt=prompt(), max_new_tokens=2,
                           semantic_ids=[10 ** 30])


# -- 14: fish-speech's generate with semantic_ids through **sampling_kwargs --------------------

def test_fish_speech_generate_takes_semantic_ids_as_a_sampling_keyword():
    from fastdecode.compat.fish_speech.codebook_decode import decode_one_token_ar

    model = dual_ar()
    semantic = list(range(SHAPE["semantic_begin_id"], SHAPE["semantic_end_id"] + 1))
    got = long_form.generate(model=model, prompt=prompt(), max_new_tokens=6,
                             decode_one_token=decode_one_token_ar, semantic_ids=semantic,
                             temperature=0)
    want = long_form.generate(model=model, prompt=prompt(), max_new_tokens=6, temperature=0)
    assert torch.equal(got, want)


# -- 6: Hugging Face config types ----------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(tie_word_embeddings="false"), r"tie_word_embeddings must be true or false"),
    (dict(eos_token_id="abc"), r"eos_token_id must be a token id"),
    (dict(eos_token_id=10 ** 6), r"eos_token_id 1000000 is not below vocab_size"),
    (dict(num_hidden_layers="2"), r"num_hidden_layers must be an integer"),
])
def test_hf_config_values_of_the_wrong_type_are_refused(tmp_path, change, match):
    from safetensors.torch import save_file

    cfg = {**dict(model_type="llama", vocab_size=101, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, hidden_size=16,
                  intermediate_size=32, tie_word_embeddings=True), **change}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"model.embed_tokens.weight": torch.zeros(101, 16)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=match) as info:
        fastdecode.load(tmp_path)
    assert str(tmp_path) in str(info.value)


# -- 16 and the minor rows: aliased caches, tiny top_p -----------------------------------------

def _attention_args(k, v):
    qkv = torch.randn(1, 1, (4 + 2 * 2) * 8)
    rope = torch.ones(16, 4, 2)
    return qkv, k, v, torch.tensor([0]), rope, 4, 2


def test_aliased_kv_caches_are_refused_before_any_write():
    cache = torch.zeros(1, 2, 16, 8)
    before = cache.clone()
    with pytest.raises(ValueError, match="share memory"):
        ops.decode_attention(*_attention_args(cache, cache))
    both = torch.zeros(2, 1, 2, 16, 8)
    with pytest.raises(ValueError, match="share memory"):
        ops.decode_attention(*_attention_args(both[0], both.view(-1)[8:8 + 256].view(1, 2, 16, 8)))
    assert torch.equal(cache, before)


def test_one_cache_shared_by_two_layers_is_refused(tiny):
    from fastdecode import fusion

    tiny.setup_caches(1, 8)
    step = fusion.plan(tiny)
    k_caches = [a.kv_cache.k_cache for a in step.attentions]
    v_caches = [a.kv_cache.v_cache for a in step.attentions]
    k_caches[1] = k_caches[0]
    snapshot = [c.clone() for c in k_caches + v_caches]
    x = torch.randn(1, 1, 32)
    with pytest.raises(ValueError, match="caches 0 and 2 .* share memory"):
        ops.decode_layers(x, step.norms, step.eps, step.weights, step.kinds, step.groupsizes,
                          k_caches, v_caches, torch.tensor([0]), tiny.rope_table, step.n_head,
                          step.n_kv_head)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, k_caches + v_caches))


def test_tiny_top_p_is_reported_as_given():
    with pytest.raises(ValueError, match=r"top_p must be at least .* got 1e-300"):
        ops.check_sampling_params(1, top_p=1e-300)


def test_shard_int4_of_a_non_contiguous_weight_equals_the_contiguous_one():
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(4))
    packed, sz = ops.quantize_int4_grouped(w, 32)
    strided_packed = packed.t().contiguous().t()  # same values, not contiguous
    strided_sz = sz.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not strided_packed.is_contiguous() and not strided_sz.is_contiguous()
    for dim, offsets, lengths in ((0, [16], [16]), (1, [32], [64])):
        want = ops.shard_int4(packed, sz, 32, dim, offsets, lengths)
        got = ops.shard_int4(strided_packed, strided_sz, 32, dim, offsets, lengths)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


# -- 9, 10, 11, minor: the command line ---------------------------------------------------------

def _cli(*args, timeout=300, stdin=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "fastdecode", *args], capture_output=True,
                          timeout=timeout, input=stdin)


@pytest.mark.parametrize("device,match", [
    ("cuda", b"no CUDA device is available"), ("bogus", b"is not a device name"),
    ("mps", b"runs on 'cpu' or 'cuda'")])
def test_cli_device_errors_are_one_line(device, match):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: --device cuda is valid here")
    r = _cli("generate", "--device", device, "--max-new-tokens", "2")
    assert r.returncode == 2 and match in r.stderr and b"Traceback" not in r.stderr


def test_cli_quantize_into_an_existing_file_and_groupsize_zero(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    r = _cli("quantize", "--mode", "int8", "--out", str(target))
    assert r.returncode == 2 and b"exists and is not a directory" in r.stderr
    assert target.read_text() == "keep me" and b"Traceback" not in r.stderr
    r = _cli("quantize", "--mode", "int4", "--groupsize", "0", "--out", str(tmp_path / "q"))
    assert r.returncode == 2 and b"groupsize must be one of" in r.stderr and b"got 0" in r.stderr


def test_cli_seed_out_of_range_is_refused_before_loading():
    r = _cli("chat", "--seed", str(2 ** 70), stdin=b"")
    assert r.returncode == 2 and b"--seed must be None or an int in [0, 2^64 - 1]" in r.stderr


def test_chat_survives_undecodable_input_and_keeps_going():
    r = _cli("chat", "--temperature", "0", "--max-new-tokens", "4",
             stdin=b"\xff\xfe\nHello\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("utf-8", "replace")
    assert "not valid UTF-8" in out and out.count("tokens/s") == 2


def test_check_sampling_params_rows_never_builds_a_table_past_the_knobs():
    """A huge row count with one-value knobs checks them without a [rows, 5] table (it
    overflowed numel, found by `make fuzz`); with a per-row knob the count must match it; a
    negative or non-int count is a ValueError."""
    ops.check_sampling_params(2 ** 62, temperature=torch.tensor(0.7), top_p=0.9)
    with pytest.raises(ValueError, match=r"temperature \(row 0\) must be a finite number >= 0"):
        ops.check_sampling_params(2 ** 62, temperature=torch.tensor(-1.0))  # (row 0)
    with pytest.raises(ValueError, match=r"per-row tensor of shape \[4611686018427387904\]"):
        ops.check_sampling_params(2 ** 62, temperature=torch.tensor(0.7),
                                  top_p=torch.full((3,), 0.9))
    for rows in (-1, 1.5, True):
        with pytest.raises(ValueError, match="rows must be a non-negative int"):
            ops.check_sampling_params(rows, temperature=0.7)
