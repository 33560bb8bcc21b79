"""fastdecode: fast LLM text generation for PyTorch.

Import order matters: torch first (it loads libtorch), then the native library (its static
initialisers register torch.ops.fastdecode.*), then the Python API built on those ops.
"""
import torch  # noqa: F401  (must precede _C)

from . import _C  # noqa: F401

if _C.isa_override_error():  # FASTDECODE_ISA names a path this CPU cannot run: refuse
    raise ValueError(_C.isa_override_error())

# the core
from .checkpoint import default_checkpoint_path, load
from .decode_core import compile_decode_step, decode, decode_one_token, decode_step_of, prefill
from .model import KVCache, ModelArgs, Transformer
from .fusion import fuse, unfuse
from .params import SamplingParams
from .sampling import (logits_to_probs, logits_to_probs_agent, multinomial_sample_one_no_sync,
                       multinomial_sample_one_no_sync_agent, sample, sample_agent)
from .quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear, quantize_model
from . import evaluate
from .tokenizer import Tokenizer
from .speculative import early_exit_draft, quantized_draft
from .segmentation import split_text
from .dual_ar import DualARModelArgs, DualARTransformer, NaiveModelArgs, NaiveTransformer
# the API styles (fastdecode.compat), their seed names exported here too
from . import compat
from .compat.gpt_fast import decode_n_tokens, generate
from .compat.llm_utils import LLM
from .compat.fish_speech.long_form import GenerateResponse, generate_long
from .compat.fish_speech.serving import (GenerateRequest, WrappedGenerateResponse,
                                         launch_thread_safe_queue,
                                         launch_thread_safe_queue_agent)
from .compat.fish_speech.codebook_decode import (decode_n_tokens_agent, decode_one_token_ar,
                                                 decode_one_token_ar_agent,
                                                 decode_one_token_naive_agent, encode_tokens,
                                                 generate_agent)

__version__ = _C.__version__


def build_info() -> dict:
    """Version, the SIMD kernel paths compiled in, those this CPU runs and the one in use
    (``FASTDECODE_ISA=avx512|avx2|scalar`` picks it; default the best), and whether CUDA
    kernels were built."""
    return {"version": __version__, "compiled_isas": _C.compiled_isas(),
            "supported_isas": _C.supported_isas(), "active_isa": _C.active_isa(),
            "cuda": bool(_C.with_cuda),
            "torch": torch.__version__}


__all__ = ["load", "default_checkpoint_path", "generate", "prefill", "decode_one_token",
           "decode_n_tokens", "decode", "compile_decode_step", "decode_step_of", "LLM",
           "ModelArgs", "KVCache", "Transformer", "Tokenizer",
           "logits_to_probs", "multinomial_sample_one_no_sync", "sample", "logits_to_probs_agent",
           "multinomial_sample_one_no_sync_agent", "sample_agent", "build_info",
           "WeightOnlyInt8Linear", "WeightOnlyInt4Linear", "quantize_model", "early_exit_draft",
           "quantized_draft", "split_text", "generate_long", "GenerateResponse",
           "GenerateRequest", "WrappedGenerateResponse", "launch_thread_safe_queue",
           "launch_thread_safe_queue_agent", "evaluate", "DualARModelArgs", "DualARTransformer",
           "NaiveModelArgs", "NaiveTransformer", "decode_one_token_ar",
           "decode_one_token_ar_agent", "decode_one_token_naive_agent", "decode_n_tokens_agent",
           "generate_agent", "encode_tokens", "fuse", "unfuse", "SamplingParams", "compat"]
