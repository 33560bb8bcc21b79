"""File fuzzing: mutated GGUF checkpoints (truncated anywhere, bytes flipped in the header,
metadata and tensor table, counts and lengths made huge) must load or fail with a
ValueError / FileNotFoundError naming the file: never another exception, a crash or a hang.
Cases run in a worker process (tests/fuzz/runner.py). Plus the default model's own GGUF,
truncated, and broken Hugging Face / gpt-fast configs.

FASTDECODE_FUZZ_EXAMPLES sets the number of mutated files (default 120 here; `make fuzz`
runs more with a random seed)."""
import json
import os
import struct

import pytest
from fuzz.runner import Worker, WorkerCrashed
from fuzz.tiny_gguf import write_tiny_gguf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fastdecode

EXAMPLES = int(os.environ.get("FASTDECODE_FUZZ_EXAMPLES", "120"))
RANDOM = os.environ.get("FASTDECODE_FUZZ_RANDOM") == "1"


@pytest.fixture(scope="module")
def worker():
    w = Worker(timeout=60)
    yield w
    w.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return path.read_bytes()


def _table_end(data: bytes) -> int:
    """Where the tensor data starts (header, metadata and tensor table before it)."""
    from fastdecode.gguf_file import read_gguf
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        return min(t.data_offset for t in read_gguf(f.name).tensors)


def _mutate(data: bytes, kind: str, where: float, value: int, table_end: int) -> bytes:
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:int(where * len(b))])
    pos = int(where * (table_end - 8))  # inside the header, metadata or tensor table
    if kind == "flip":
        b[pos] ^= 1 << (value % 8)
    elif kind == "byte":
        b[pos] = value % 256
    elif kind == "huge_u64":
        b[pos:pos + 8] = struct.pack("<Q", [2 ** 63 - 1, 2 ** 40, 2 ** 32, 0][value % 4])
    elif kind == "huge_u32":
        b[pos:pos + 4] = struct.pack("<I", [2 ** 32 - 1, 2 ** 31, 13, 0][value % 4])
    return bytes(b)


def test_unmutated_tiny_gguf_loads(worker, tiny, tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(tiny)
    for quantized in (False, True):
        assert worker.run({"file": str(path), "quantized": quantized})["outcome"] == "ok"


def test_mutated_gguf_files_load_or_name_the_file(worker, tiny, tmp_path):
    table_end = _table_end(tiny)
    outcomes = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["truncate", "flip", "byte", "huge_u64", "huge_u32"]),
           where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255),
           quantized=st.booleans())
    def check(kind, where, value, quantized):
        path = tmp_path / "mutated.gguf"
        path.write_bytes(_mutate(tiny, kind, where, value, table_end))
        case = {"file": str(path), "quantized": quantized}
        result = worker.run(case)
        outcomes.append(result["outcome"])
        assert result["outcome"] != "bad", f"{kind} at {where:.4f} ({value}): {result['detail']}"

    check()
    assert outcomes.count("error") > len(outcomes) // 4  # the mutations do reach the checks


@pytest.mark.parametrize("keep", [0, 3, 24, 1000, 3_000_000, -1])
def test_truncated_default_gguf_says_truncated(worker, tmp_path, keep):
    data = fastdecode.default_checkpoint_path().read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    result = worker.run({"file": str(path)})
    assert result["outcome"] == "error", result
    assert "truncated" in result["detail"] or "empty" in result["detail"], result


def test_default_gguf_truncation_message_names_the_tensor(tmp_path):
    data = fastdecode.default_checkpoint_path().read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:-1])
    with pytest.raises(ValueError, match=rf"^{path}: truncated: tensor '[\w.]+' needs \d+ bytes "
                                         rf"at offset \d+, the file has {len(data) - 1}$"):
        fastdecode.load(path)


@pytest.mark.parametrize("config,match", [
    ("{not json", r"config.json: not valid JSON \(Expecting property name"),
    ("[1, 2]", r"config.json: expected a JSON object"),
    (dict(num_attention_heads=0), r"n_head must be an integer >= 1, got 0"),
    (dict(num_hidden_layers="two"), r"num_hidden_layers must be an integer, got 'two'"),
    (dict(hidden_size=None), r"dim must be an integer >= 1, got None"),
    (dict(drop="num_attention_heads"), r"config.json: num_attention_heads is missing"),
])
def test_broken_hf_config_is_a_value_error_naming_the_file(tmp_path, default_model, config,
                                                           match):
    base = dict(model_type="llama", vocab_size=49152, hidden_size=64, intermediate_size=96,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=128)
    if isinstance(config, dict):
        drop = config.pop("drop", None)
        base.update(config)
        base.pop(drop, None)
        text = json.dumps(base)
    else:
        text = config
    (tmp_path / "config.json").write_text(text)
    (tmp_path / "model.safetensors").write_bytes(b"")
    default_model[1].save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=match) as info:
        fastdecode.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_a_crash_and_a_hang_are_caught_and_named():
    import sys
    crasher = Worker([sys.executable, "-c", "import os, sys; print('{\"ready\": 1}', flush=True);"
                      "sys.stdin.readline(); os.abort()"])
    with pytest.raises(WorkerCrashed, match=r"died \(signal SIGABRT\) on case \{\"x\": 1\}"):
        crasher.run({"x": 1})
    sleeper = Worker([sys.executable, "-c", "import time; print('{\"ready\": 1}', flush=True);"
                      "time.sleep(60)"], timeout=1)
    with pytest.raises(WorkerCrashed, match=r"hung \(> 1 s\)"):
        sleeper.run({"y": 2})


# -- fish-speech codebook folders and Hugging Face configs: values of any JSON type ------------

JSON_VALUES = ["32", 2.5, 0, -1, True, False, None, 10 ** 9, 2 ** 70, [], {}, "no", 1e-300]


def _codebook_folder(path):
    from test_dual_ar import dual_ar

    from fastdecode.dual_ar_folder import save_pretrained
    save_pretrained(dual_ar(), path)
    return json.loads((path / "config.json").read_text())


def test_mutated_codebook_folders_load_or_name_the_file(worker, tmp_path):
    import torch

    base = _codebook_folder(tmp_path / "base")
    state = torch.load(tmp_path / "base" / "model.pth", weights_only=True)
    keys = sorted(base)
    names = sorted(state)
    outcomes = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(field=st.sampled_from(keys), value=st.sampled_from(JSON_VALUES),
           tensor=st.sampled_from(names),
           edit=st.sampled_from(["none", "drop", "shape", "int", "scalar", "text"]))
    def check(field, value, tensor, edit):
        folder = tmp_path / "mutated"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps({**base, field: value}))
        mutated = dict(state)
        if edit == "drop":
            mutated.pop(tensor)
        elif edit == "shape":
            mutated[tensor] = torch.zeros(3, 2)
        elif edit == "int":
            mutated[tensor] = mutated[tensor].to(torch.int32)
        elif edit == "scalar":
            mutated[tensor] = 7
        elif edit == "text":
            mutated[tensor] = "weights"
        torch.save(mutated, folder / "model.pth")
        result = worker.run({"file": str(folder), "loader": "codebook"})
        outcomes.append(result["outcome"])
        assert result["outcome"] != "bad", f"{field}={value!r}, {tensor}: {edit}: " \
                                           f"{result['detail']}"

    check()
    assert outcomes.count("error") > len(outcomes) // 2


def test_mutated_hf_configs_load_or_name_the_file(worker, tmp_path, default_model):
    from safetensors.torch import save_file

    import torch

    base = dict(model_type="llama", vocab_size=101, hidden_size=16, intermediate_size=32,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                tie_word_embeddings=True, eos_token_id=2, bos_token_id=1)
    folder = tmp_path / "hf"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(101, 16, generator=g),
               "model.norm.weight": torch.ones(16)}
    p = "model.layers.0."
    for name, shape in (("self_attn.q_proj", (16, 16)), ("self_attn.k_proj", (16, 16)),
                        ("self_attn.v_proj", (16, 16)), ("self_attn.o_proj", (16, 16)),
                        ("mlp.gate_proj", (32, 16)), ("mlp.up_proj", (32, 16)),
                        ("mlp.down_proj", (16, 32))):
        tensors[p + name + ".weight"] = torch.randn(shape, generator=g)
    tensors[p + "input_layernorm.weight"] = torch.ones(16)
    tensors[p + "post_attention_layernorm.weight"] = torch.ones(16)
    save_file(tensors, str(folder / "model.safetensors"))
    default_model[1].save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps(base))
    assert worker.run({"file": str(folder)})["outcome"] == "ok"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(field=st.sampled_from(sorted(base)), value=st.sampled_from(JSON_VALUES))
    def check(field, value):
        (folder / "config.json").write_text(json.dumps({**base, field: value}))
        result = worker.run({"file": str(folder)})
        assert result["outcome"] != "bad", f"{field}={value!r}: {result['detail']}"

    check()
