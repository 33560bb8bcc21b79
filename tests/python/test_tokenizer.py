"""The GGUF-built tokenizer against Hugging Face's tokenizer of the same GGUF."""
import pytest

import fastdecode

TEXTS = ["Hello world", "The year 2024 had 366 days, pi=3.14159.",
         "  leading spaces\n\nnewlines\ttabs", "café naïve 日本語 🙂",
         "<|im_start|>user\nHi<|im_end|>\n", "don't you'll I'M", "x" * 50 + " 1234567890"]


@pytest.fixture(scope="module")
def hf_tokenizer():
    import transformers

    path = fastdecode.default_checkpoint_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers_and_round_trips(default_model, hf_tokenizer, text):
    tok = default_model[1]
    ids = tok.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_special_ids_and_chat_template(default_model, hf_tokenizer):
    tok = default_model[1]
    assert (tok.bos_id, tok.eos_id) == (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id)
    for msgs in ([{"role": "user", "content": "Hi"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]):
        want = hf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert tok.apply_chat_template(msgs) == want
    assert tok.stop_ids == [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    assert tok.decode(tok.encode("<|im_end|>x"), skip_special_tokens=True) == "x"
