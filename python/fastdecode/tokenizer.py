"""Tokenizer: BPE built from GGUF metadata (or a tokenizer.json) with the `tokenizers` crate.

Also carries the chat format: models whose vocabulary has ``<|im_start|>``/``<|im_end|>``
(SmolLM2, Qwen, fish-speech's LLMs) are prompted in ChatML.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

from tokenizers import AddedToken, Tokenizer as _RustTokenizer, decoders, models, pre_tokenizers

__all__ = ["Tokenizer"]

# GGUF token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*): 3 = control (special) token,
# 4 = user-defined token. Both must be matched whole, never split by BPE.
_GGUF_SPECIAL_TYPES = (3, 4)

# llama.cpp pre-tokenizer names whose Hugging Face originals split digits one by one before
# the GPT-2 byte-level regex.
_DIGIT_SPLIT_PRE = {"smollm", "qwen2", "deepseek-llm", "deepseek-coder"}

DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def check_text(name: str, text) -> str:
    """``text`` must be a str that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode: it holds the lone surrogate "
                         f"{text[e.start]!r} at index {e.start} (undecodable input bytes?)") \
            from None
    return text


class Tokenizer:
    """encode/decode with BOS/EOS ids and ChatML prompts.

    ``eos_id`` is the checkpoint's end-of-sequence id (for ChatML models, ``<|im_end|>``);
    ``stop_ids`` adds ``<|endoftext|>`` when present, which ends plain-text continuations.
    """

    def __init__(self, tokenizer: _RustTokenizer, bos_id: Optional[int], eos_id: Optional[int],
                 add_bos: bool = False, system_prompt: Optional[str] = None):
        self._tok = tokenizer
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.im_start_id = tokenizer.token_to_id("<|im_start|>")
        self.im_end_id = tokenizer.token_to_id("<|im_end|>")
        self.default_system_prompt = system_prompt

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_gguf_fields(cls, fields: Dict[str, object]) -> "Tokenizer":
        """fields: GGUF metadata (``tokenizer.ggml.*`` keys) as Python values."""
        model = fields.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"unsupported GGUF tokenizer model {model!r}: fastdecode reads "
                             "byte-level BPE ('gpt2') vocabularies")
        tokens: List[str] = list(fields["tokenizer.ggml.tokens"])
        merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges", [])]
        vocab = {t: i for i, t in enumerate(tokens)}
        rust = _RustTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if fields.get("tokenizer.ggml.pre") in _DIGIT_SPLIT_PRE:
            rust.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            rust.pre_tokenizer = byte_level
        rust.decoder = decoders.ByteLevel()
        types = fields.get("tokenizer.ggml.token_type") or []
        special = [tokens[i] for i, t in enumerate(types) if t in _GGUF_SPECIAL_TYPES]
        rust.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
        system_prompt = None
        template = fields.get("tokenizer.chat_template") or ""
        if DEFAULT_SYSTEM_PROMPT in template:
            system_prompt = DEFAULT_SYSTEM_PROMPT
        return cls(rust, fields.get("tokenizer.ggml.bos_token_id"),
                   fields.get("tokenizer.ggml.eos_token_id"),
                   add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
                   system_prompt=system_prompt)

    @classmethod
    def from_file(cls, path: str, bos_id: Optional[int] = None, eos_id: Optional[int] = None,
                  add_bos: bool = False) -> "Tokenizer":
        """A Hugging Face ``tokenizer.json``; ids default to the file's special tokens."""
        rust = _RustTokenizer.from_file(str(path))
        if eos_id is None:
            for name in ("<|im_end|>", "</s>", "<|endoftext|>", "<|end_of_text|>"):
                if rust.token_to_id(name) is not None:
                    eos_id = rust.token_to_id(name)
                    break
        if bos_id is None:
            for name in ("<s>", "<|begin_of_text|>", "<|im_start|>"):
                if rust.token_to_id(name) is not None:
                    bos_id = rust.token_to_id(name)
                    break
        return cls(rust, bos_id, eos_id, add_bos=add_bos)

    def save(self, path: str) -> None:
        """Write a tokenizer.json (loadable by ``from_file`` and by Hugging Face)."""
        self._tok.save(str(path))

    # -- text <-> ids -----------------------------------------------------------------------
    def encode(self, text: str, bos: Optional[bool] = None) -> List[int]:
        """Token ids of ``text``; special tokens written in the text are matched whole.

        bos: prepend the BOS id (default: what the checkpoint asks for). ``text`` must be a
        str of valid Unicode: a lone surrogate (what undecodable input bytes become under
        Python's ``surrogateescape``) is a ValueError giving its index.
        """
        check_text("text", text)
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    @property
    def stop_ids(self) -> List[int]:
        ids = [self.eos_id] if self.eos_id is not None else []
        eot = self._tok.token_to_id("<|endoftext|>")
        if eot is not None and eot not in ids:
            ids.append(eot)
        return ids

    # -- chat -------------------------------------------------------------------------------
    @property
    def is_chatml(self) -> bool:
        return self.im_start_id is not None and self.im_end_id is not None

    def apply_chat_template(self, messages: Sequence[Dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """ChatML text for ``[{"role": ..., "content": ...}, ...]``.

        A conversation that does not open with a system message gets the checkpoint's
        default system prompt (SmolLM2's template does the same).
        """
        if not self.is_chatml:
            raise ValueError("this tokenizer has no <|im_start|>/<|im_end|> tokens; "
                             "chat prompts need a ChatML vocabulary")
        parts = []
        if self.default_system_prompt and (not messages or messages[0]["role"] != "system"):
            parts.append(f"<|im_start|>system\n{self.default_system_prompt}<|im_end|>\n")
        for m in messages:
            parts.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)
