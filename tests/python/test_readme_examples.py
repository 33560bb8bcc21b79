"""The README's LLM example runs as written (a user copies it first)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_llm_example_runs(capsys):
    code = _python_block_after("## Text in, text out: `LLM`")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    outs, r = namespace["outs"], namespace["r"]
    assert len(outs) == 4 and all(o["finish_reason"] in ("stop", "length") for o in outs)
    assert len(r["token_ids"]) == len(r["logprobs"]) <= 8
    assert "Paris" in capsys.readouterr().out


def test_sampling_params_example_runs_after_the_llm_example():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    first = _python_block_after("## Text in, text out: `LLM`")
    second = next(b for b in blocks if "SamplingParams(" in b)
    namespace = {}
    exec(compile(first, "README.md", "exec"), namespace)
    exec(compile("import torch\nimport fastdecode\n" + second, "README.md", "exec"), namespace)
    params = namespace["params"]
    out = namespace["llm"].complete("Once upon a time", params)
    assert len(out) == 1 and out[0]["finish_reason"] in ("stop", "length")
    assert len(out[0]["token_ids"]) <= params.max_tokens
