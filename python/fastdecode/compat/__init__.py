"""The API styles people arrive with, each a thin translation onto the core (the decode
loop, ``SamplingParams``, the sampler, the model):

- ``gpt_fast``: ``generate`` and ``decode_n_tokens`` (gpt-fast's ``**sampling_kwargs``);
- ``llm_utils``: ``LLM`` (``generate``, ``complete``; modularforge's ``generate_samples``);
- ``modularforge``: the chat REPL (``ChatSession``, ``run_repl``);
- ``fish_speech``: ``generate_long``, the request queues, fish-speech's ``generate`` /
  ``decode_n_tokens`` and the codebook (DualAR / Naive) decoding.

Every seed name is also exported from ``fastdecode`` itself.
"""
from . import fish_speech, gpt_fast, llm_utils, modularforge  # noqa: F401

__all__ = ["fish_speech", "gpt_fast", "llm_utils", "modularforge"]
