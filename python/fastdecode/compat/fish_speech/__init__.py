"""fish-speech's API (seed 002): ``long_form`` (``generate_long``, ``generate``,
``decode_n_tokens``, ``load_model``), ``serving`` (the thread-safe request queues),
``codebook_decode`` (DualAR / Naive decoding and the ``_agent`` variants), ``queue_demo``."""
from . import codebook_decode, long_form, queue_demo, serving  # noqa: F401

__all__ = ["codebook_decode", "long_form", "queue_demo", "serving"]
