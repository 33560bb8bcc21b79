"""The interactive REPL (``python -m fastdecode chat``): a prompt, the reply streamed as it is
decoded, tokens/s after it (modularforge's ``interactive_generate``, on ``LLM.generate``).

Chat models (a ChatML vocabulary) get the chat template and the conversation so far, the
oldest turns dropped when the context window would overflow; ``raw`` continues each line as
plain text. ``quit`` / ``exit`` / Ctrl-D end the session (status 0); Ctrl-C during a reply
stops that reply and returns to the prompt; Ctrl-C at the prompt ends the session. No input
ends it with a traceback: a bad setting is reported and the prompt comes back.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, List, Optional, TextIO, Tuple

from .llm_utils import LLM, check_generate_arguments
from ..params import SamplingParams
from ..validation import check_int

__all__ = ["ChatSession", "run_repl"]

PROMPT = ">>> "
QUIT_WORDS = ("quit", "exit")


class ChatSession:
    """Conversation state: the (user, assistant) turns and how to prompt the next one."""

    def __init__(self, llm: LLM, *, raw: bool = False, max_new_tokens: int = 256,
                 seed: Optional[int] = None, params: Optional[SamplingParams] = None,
                 **sampling):
        """Sampling: ``LLM.generate``'s keywords (``seed``, ``temperature``, ``top_k``...)
        or one ``SamplingParams`` (``params``), built and checked once for the session;
        each reply changes only its seed (``seed + turn``) and its room."""
        if params is None:
            params = check_generate_arguments(max_new_tokens, seed=seed, **sampling)[1]
        elif sampling or seed is not None:
            raise TypeError("pass params or sampling keywords, not both")
        check_int("max_new_tokens", max_new_tokens, 1)
        self.params = params
        self.llm = llm
        self.raw = raw or not llm.tokenizer.is_chatml
        self.max_new_tokens = max_new_tokens
        self.seed = params.seed
        self.turns: List[Tuple[str, str]] = []

    def _ids(self, user: str, turns) -> List[int]:
        if self.raw:
            return self.llm.encode(user)
        messages = []
        for question, answer in turns:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return self.llm.encode(self.llm.tokenizer.apply_chat_template(messages))

    def prompt_ids(self, user: str) -> Tuple[List[int], int]:
        """``(ids, max_tokens)`` for the next reply: as many recent turns as leave room for
        ``max_new_tokens`` (at least one token); ValueError when the line alone does not
        fit the context."""
        block = self.llm.model.config.block_size
        turns = [] if self.raw else list(self.turns)
        ids = self._ids(user, turns)
        while turns and len(ids) + self.max_new_tokens > block:
            turns.pop(0)
            ids = self._ids(user, turns)
        if len(ids) >= block:
            raise ValueError(f"the message takes {len(ids)} tokens; the context holds {block}")
        self.turns = self.turns[len(self.turns) - len(turns):] if not self.raw else []
        return ids, min(self.max_new_tokens, block - len(ids))

    def warm_up(self) -> None:
        """One short greedy decode: the first reply then runs at the speed of the rest
        (thread pools, allocator and lazy initialisation cost ~0.5 s once)."""
        self.llm.generate("Hello", max_tokens=2, temperature=0)

    def reply(self, user: str, stream: Callable[[str], None]) -> dict:
        """Decode the reply to ``user`` (streamed through ``stream``), remember the turn and
        return ``LLM.generate``'s dict."""
        ids, max_tokens = self.prompt_ids(user)
        seed = None if self.seed is None else (self.seed + len(self.turns)) % 2 ** 64
        out = self.llm.complete(ids, self.params.replace(seed=seed, max_tokens=max_tokens),
                                stream=stream)[0]
        if not self.raw:
            self.turns.append((user, out["text"]))
        return out


def readable_text(line: str) -> Tuple[str, bool]:
    """``(line, False)`` when ``line`` is valid Unicode, else the line with its undecodable
    bytes (surrogate escapes, as ``input()`` returns them) or lone surrogates replaced by
    U+FFFD, and True."""
    try:
        line.encode("utf-8")
        return line, False
    except UnicodeEncodeError:
        pass
    try:
        return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True
    except UnicodeEncodeError:  # a surrogate that no input byte made
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in line), True


def _ignore_interrupts() -> None:
    """The session is over: a Ctrl-C from now on (say, just after Ctrl-D, while the
    interpreter tears down) must not turn the clean exit into death by SIGINT."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_repl(session: ChatSession, read: Callable[[str], str] = input,
             out: TextIO = sys.stdout) -> int:
    """Read lines until quit / EOF / Ctrl-C at the prompt; returns the exit status (0)."""
    leaving = [False]
    try:
        return _repl_loop(session, read, out, leaving)
    except KeyboardInterrupt:
        # a Ctrl-C that lands while the session is already ending (just after Ctrl-D, before
        # SIGINT is ignored) is part of leaving, not a failure
        if not leaving[0]:
            raise
        _ignore_interrupts()
        return 0


def _repl_loop(session: ChatSession, read: Callable[[str], str], out: TextIO,
               leaving: list) -> int:
    def write(text: str) -> None:
        out.write(text)
        out.flush()

    mode = "plain continuation" if session.raw else "chat template, history kept"
    write(f"fastdecode chat ({mode}): 'quit', 'exit' or Ctrl-D to leave, Ctrl-C stops a "
          "reply\n")
    while True:
        try:
            line = read(PROMPT)
        except (EOFError, KeyboardInterrupt):
            leaving[0] = True  # first: no signal can interrupt this store
            _ignore_interrupts()
            write("\n")
            return 0
        line, replaced = readable_text(line)
        if replaced:
            write("[the line was not valid UTF-8: undecodable bytes were replaced by U+FFFD]\n")
        if line.strip().lower() in QUIT_WORDS:
            leaving[0] = True
            _ignore_interrupts()
            return 0
        if not line.strip():
            continue
        try:
            result = session.reply(line, write)
        except KeyboardInterrupt:
            write("\n[reply stopped]\n")
            continue
        except ValueError as e:
            write(f"[error: {e}]\n")
            continue
        raw = result["_raw_response"]
        seconds = raw["prefill_seconds"] + raw["decode_seconds"]
        tokens = raw["completion_tokens"]
        write(f"\n[{tokens} tokens in {seconds:.2f} s: {tokens / max(seconds, 1e-9):.1f} "
              f"tokens/s, {result['finish_reason']}; context {raw['prompt_tokens']} tokens]\n")
