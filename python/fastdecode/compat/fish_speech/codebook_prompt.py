"""fish-speech's ``encode_tokens``: a user turn (and optional reference codes) as a codebook
model's prompt ``[num_codebooks + 1, T]``."""
from __future__ import annotations

import torch

from ...dual_ar import CODEBOOK_PAD_TOKEN_ID
from ...validation import check_int

__all__ = ["encode_tokens"]


def encode_tokens(tokenizer, string: str, device="cuda", prompt_tokens=None,
                  num_codebooks: int = 4) -> torch.Tensor:
    """The user turn ``string`` as a codebook-model prompt ``[num_codebooks + 1, T]``: its
    ChatML token ids in row 0, ``CODEBOOK_PAD_TOKEN_ID`` in the code rows. With
    ``prompt_tokens`` (reference codes ``[K, N]`` or ``[1, K, N]``, K >= num_codebooks; the
    first num_codebooks rows are used) a semantic segment follows: N positions of the
    ``<|semantic|>`` token with the codes + 1 (0 stays the pad) and a closing ``<|im_end|>``.
    """
    check_int("num_codebooks", num_codebooks, 1)
    if not isinstance(string, str):
        raise ValueError(f"string must be text, got {type(string).__name__}")
    text = f"<|im_start|>user\n{string}<|im_end|><|im_start|>assistant\n"
    ids = torch.tensor([tokenizer.encode(text, bos=False)], dtype=torch.int64, device=device)
    pad = torch.full((num_codebooks, ids.shape[1]), CODEBOOK_PAD_TOKEN_ID, dtype=torch.int64,
                     device=device)
    prompt = torch.cat([ids, pad], dim=0)
    if prompt_tokens is None:
        return prompt
    codes = torch.as_tensor(prompt_tokens, device=device)
    if codes.dim() == 3:
        if codes.shape[0] != 1:
            raise ValueError(f"3-D prompt_tokens must be [1, K, N], got {tuple(codes.shape)}")
        codes = codes[0]
    if codes.dim() != 2 or codes.shape[0] < num_codebooks or codes.shape[1] < 1 or \
            codes.dtype.is_floating_point:
        raise ValueError(f"prompt_tokens must be integer codes [K >= num_codebooks = "
                         f"{num_codebooks}, N >= 1], got {tuple(codes.shape)} {codes.dtype}")
    if int(codes.min()) < 0:
        raise ValueError("prompt_tokens must be codes >= 0")
    data = codes[:num_codebooks].to(torch.int64) + 1
    data = torch.cat([data, torch.zeros((num_codebooks, 1), dtype=torch.int64, device=device)],
                     dim=1)
    semantic = tokenizer.token_to_id("<|semantic|>")
    end = tokenizer.token_to_id("<|im_end|>")
    if semantic is None or end is None:
        raise ValueError("the tokenizer has no <|semantic|> or <|im_end|> token: it cannot "
                         "encode reference codes")
    main = torch.full((1, data.shape[1]), semantic, dtype=torch.int64, device=device)
    main[0, -1] = end
    return torch.cat([prompt, torch.cat([main, data], dim=0)], dim=1)
