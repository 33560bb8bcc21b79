"""`python -m fastdecode ...` end to end on the default model."""
import subprocess
import sys


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastdecode", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_generate_streams_text_and_reports_speed():
    r = _run("generate", "--prompt", "The capital of France is", "--max-new-tokens", "12",
             "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is Paris")
    assert "tokens/s]" in r.stdout.splitlines()[-1]


def test_generate_chat_with_seed_is_reproducible():
    args = ("generate", "--chat", "--prompt", "Name a colour.", "--max-new-tokens", "10",
            "--seed", "3", "--temperature", "0.8", "--top-k", "50")
    a, b = _run(*args), _run(*args)
    assert a.returncode == 0, a.stderr
    text = lambda r: r.stdout.rsplit("[", 1)[0]  # noqa: E731  (drop the timing line)
    assert text(a) == text(b) and text(a).strip()


def test_bad_argument_is_a_clean_error():
    r = _run("generate", "--temperature", "-1", "--max-new-tokens", "3")
    assert r.returncode == 2
    assert "temperature" in r.stderr and "Traceback" not in r.stderr
    r = _run("generate", "--max-new-tokens", "0")
    assert r.returncode == 2 and "must be >= 1" in r.stderr


def test_info_reports_build():
    r = _run("info")
    assert r.returncode == 0
    assert "active_isa:" in r.stdout and "cuda: False" in r.stdout


def test_generate_with_gguf_weights_kept_quantized():
    r = _run("generate", "--quantized", "--prompt", "The capital of France is",
             "--max-new-tokens", "8", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is Paris")


def test_quantize_bad_mode_is_rejected_by_argparse():
    r = _run("quantize", "--mode", "int3", "--out", "/tmp/never-written")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_speculative_flags_give_the_plain_greedy_text():
    base = ("generate", "--prompt", "The capital of France is", "--max-new-tokens", "16",
            "--temperature", "0")
    plain = _run(*base)
    text = lambda r: r.stdout.split("\n[")[0]  # noqa: E731  (drop the timing lines)
    for flags in (("--draft-quantize", "int8", "--speculate-k", "4"),
                  ("--draft-layers", "8", "--speculate-k", "2"),
                  ("--draft-checkpoint", "default", "--draft-quantize", "int4")):
        r = _run(*base, *flags)
        assert r.returncode == 0, r.stderr
        assert text(r) == text(plain)
        assert "accept_counts" in r.stdout
    r = _run(*base, "--draft-layers", "3", "--draft-quantize", "int4")
    assert r.returncode == 2 and "cannot be combined" in r.stderr
