"""`python -m fastdecode chat` driven through a pseudo-terminal: a streamed reply with its
tokens/s, history carried into the next turn, Ctrl-C during a reply back to the prompt,
quit / Ctrl-D / Ctrl-C at the prompt all exiting 0, never a traceback."""
import io
import re
import sys
import time
from pathlib import Path

import pexpect

TIMEOUT = 180


def _spawn(*args, console_script=False):
    command = ([str(Path(sys.executable).with_name("fastdecode"))] if console_script
               else [sys.executable, "-m", "fastdecode"])
    child = pexpect.spawn(command[0], [*command[1:], "chat", *args],
                          encoding="utf-8", timeout=TIMEOUT, dimensions=(40, 200))
    child.logfile_read = io.StringIO()
    child.expect_exact("Ctrl-C stops a reply")
    child.expect_exact(">>> ")
    return child


def _finish(child):
    child.expect(pexpect.EOF)
    child.close()
    transcript = child.logfile_read.getvalue()
    assert "Traceback" not in transcript, transcript
    return child.exitstatus, transcript


def _context_tokens(child):
    child.expect(r"context (\d+) tokens\]")
    return int(child.match.group(1))


def test_reply_history_interrupt_and_quit():
    child = _spawn("--temperature", "0", "--max-new-tokens", "300")
    # (a prompt whose first reply token leads its runner-up by ~1 logit: for "What is the
    # capital of France?" this 135M model weighs an English and a French opening within
    # 0.1-0.3, so the 8-bit activation rounding of the quantized default picks either)
    child.sendline("Name the capital city of France.")
    child.expect_exact("France.\r\n")               # the terminal's echo
    child.expect(r"tokens/s")
    assert "Paris" in child.before
    first = _context_tokens(child)
    child.expect_exact(">>> ")
    child.sendline("And of Italy?")
    child.expect(r"tokens/s")
    second = _context_tokens(child)
    assert second > first + 5                        # the first turn is in the prompt
    child.expect_exact(">>> ")
    child.sendline("Write a very long story about a dragon who learns to bake bread.")
    child.expect_exact("bread.\r\n")
    child.expect(r"\w\w")                            # the reply has started streaming
    child.sendintr()
    child.expect_exact("[reply stopped]")
    child.expect_exact(">>> ")
    child.sendline("quit")
    status, _ = _finish(child)
    assert status == 0


def test_ctrl_d_exits_zero_and_raw_mode_continues_text():
    child = _spawn("--raw", "--temperature", "0", "--max-new-tokens", "8")
    child.sendline("The capital of France is")
    child.expect(r"tokens/s")
    assert re.search(r"\w", child.before)
    child.expect_exact(">>> ")
    child.sendeof()
    status, transcript = _finish(child)
    assert status == 0 and "plain continuation" in transcript


def test_ctrl_c_at_the_prompt_exits_zero():
    child = _spawn(console_script=True)  # the `fastdecode chat` console script
    child.sendintr()
    status, _ = _finish(child)
    assert status == 0


def test_bad_setting_is_an_error_message_not_a_traceback():
    child = pexpect.spawn(sys.executable, ["-m", "fastdecode", "chat", "--temperature", "3"],
                          encoding="utf-8", timeout=TIMEOUT)
    child.logfile_read = io.StringIO()
    status, transcript = _finish(child)
    assert status == 2 and "temperature must be in [0, 2]" in transcript


def test_ctrl_c_right_after_ctrl_d_still_exits_zero():
    for delay in (0.0, 0.05, 0.2):
        child = _spawn("--max-new-tokens", "4")
        child.sendeof()
        time.sleep(delay)
        child.sendintr()
        status, _ = _finish(child)
        assert status == 0 and child.signalstatus is None, (delay, status)
