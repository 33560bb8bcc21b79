"""The OpenAI-compatible HTTP server on the continuous-batching engine (``python -m
fastdecode serve``; docs/serving.md)."""
