"""The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against Hugging Face transformers
loading the same file: fp32 logits within 1e-4 and greedy generation token for token."""
import pytest
import torch

import fastdecode

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(default_model, hf_model, prompt):
    model, tokenizer = default_model
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        want = hf_model(ids).logits
        model.setup_caches(1, ids.shape[1])
        got = model(ids, torch.arange(ids.shape[1]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_matches_transformers(default_model, hf_model, prompt):
    model, tokenizer = default_model
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        # An explicit mask: otherwise transformers infers one from pad_token_id (2, which is
        # also <|im_end|>) and hides every <|im_end|> of a chat prompt from attention.
        want = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64,
                                 do_sample=False)
    got, _ = fastdecode.generate(model, ids[0], 64, temperature=0)
    assert got.shape == want.shape == (1, ids.shape[1] + 64)
    assert got.tolist() == want.tolist()


def test_default_model_continuation_is_english(default_model):
    model, tokenizer = default_model
    ids = torch.tensor(tokenizer.encode("The capital of France is"))
    seq, _ = fastdecode.generate(model, ids, 8, temperature=0)
    assert "Paris" in tokenizer.decode(seq[0, ids.numel():].tolist())


def test_greedy_with_repetition_penalty_matches_transformers(default_model, hf_model):
    """Hugging Face penalises every id of the prompt and of the output so far, once each,
    dividing positive logits and multiplying negative ones: the same contract as ours."""
    model, tokenizer = default_model
    ids = torch.tensor([tokenizer.encode("List the days of the week: Monday, Tuesday,")])
    with torch.no_grad():
        want = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48,
                                 do_sample=False, repetition_penalty=1.3)
    got, _ = fastdecode.generate(model, ids[0], 48, temperature=0, repetition_penalty=1.3)
    assert got.tolist() == want.tolist()
    plain, _ = fastdecode.generate(model, ids[0], 48, temperature=0)
    assert plain.tolist() != got.tolist()  # the penalty changed the output
