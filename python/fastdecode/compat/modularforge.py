"""The interactive REPL (``python -m fastdecode chat``): a prompt, the reply streamed as it is
decoded, tokens/s after it (modularforge's ``interactive_generate``).

The session decodes on its own serving engine (``fastdecode.engine.Engine``, one slot of
``context`` positions): each reply is a request, and the slot keeps what it has read, so the
next turn's prompt (the conversation so far, then the new line) re-reads only what is new.
Chat models (a ChatML vocabulary) get the chat template and the conversation so far, the
oldest turns dropped when the context window would overflow; ``raw`` continues each line as
plain text. ``quit`` / ``exit`` / Ctrl-D end the session (status 0); Ctrl-C during a reply
stops that reply and returns to the prompt; Ctrl-C at the prompt ends the session. No input
ends it with a traceback: a bad setting is reported and the prompt comes back.
"""
from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from typing import Callable, List, Optional, TextIO, Tuple

from .llm_utils import LLM, check_generate_arguments
from ..engine import Engine
from ..engine.request import FinishEvent, GenerationRequest, TokenEvent
from ..params import SamplingParams
from ..validation import check_int

__all__ = ["ChatSession", "run_repl", "REPL_CONTEXT"]

PROMPT = ">>> "
QUIT_WORDS = ("quit", "exit")
# positions of the session's slot (prompt and reply), at most the model's block size: a
# conversation longer than this drops its oldest turns (~190 MB of KV cache for the default
# model)
REPL_CONTEXT = 4096


class ChatSession:
    """Conversation state: the (user, assistant) turns and how to prompt the next one, and
    the engine that decodes the replies (started at the first reply, holding the model
    until ``close()``; the session is a context manager)."""

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
        self.context = min(llm.model.config.block_size, REPL_CONTEXT)
        self._engine: Optional[Engine] = None

    def __enter__(self) -> "ChatSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    def close(self) -> None:
        """Stop the engine: the model is free for other decodes again."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.stop()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.llm.model, self.llm.tokenizer, max_batch=1,
                                  ctx=self.context, max_waiting=1).start()
        return self._engine

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
        block = self.context
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
        self._complete(self.llm.encode("Hello"), SamplingParams(temperature=0, max_tokens=2),
                       lambda _text: None)

    def reply(self, user: str, stream: Callable[[str], None]) -> dict:
        """Decode the reply to ``user`` (streamed through ``stream``), remember the turn and
        return ``LLM.generate``'s dict (``_raw_response`` also says how many prompt tokens
        the slot already held: ``cached_tokens``)."""
        ids, max_tokens = self.prompt_ids(user)
        seed = None if self.seed is None else (self.seed + len(self.turns)) % 2 ** 64
        out = self._complete(ids, self.params.replace(seed=seed, max_tokens=max_tokens),
                             stream)
        if not self.raw:
            self.turns.append((user, out["text"]))
        return out

    def _complete(self, ids: List[int], params: SamplingParams,
                  stream: Callable[[str], None]) -> dict:
        """One request on the session's engine, its text streamed as it arrives. A
        KeyboardInterrupt (Ctrl-C) cancels it: the slot is free at the engine's next step."""
        end_ids = tuple(self.llm.tokenizer.stop_ids)
        events: queue.SimpleQueue = queue.SimpleQueue()
        start = time.perf_counter()
        handle = self.engine.submit(GenerationRequest(tuple(ids), params, end_ids), events.put)
        tokens: List[int] = []
        pieces: List[str] = []
        first = None
        try:
            while True:
                try:
                    event = events.get(timeout=0.1)  # a timeout: Ctrl-C is seen at once
                except queue.Empty:
                    continue
                if isinstance(event, TokenEvent):
                    first = first or time.perf_counter()
                    if event.token_id not in end_ids:
                        tokens.append(event.token_id)
                elif not isinstance(event, FinishEvent):  # ErrorEvent
                    raise RuntimeError(event.message)
                if event.text:
                    pieces.append(event.text)
                    stream(event.text)
                if isinstance(event, FinishEvent):
                    break
        except BaseException:
            handle.cancel()
            raise
        end = time.perf_counter()
        first = first or end
        produced = event.completion_tokens
        return {"text": "".join(pieces), "token_ids": tokens,
                "finish_reason": event.finish_reason,
                "_raw_response": {"prompt_tokens": len(ids), "completion_tokens": produced,
                                  "cached_tokens": event.cached_tokens,
                                  "prefill_seconds": first - start,
                                  "decode_seconds": end - first,
                                  "tokens_per_second": produced / max(end - start, 1e-9)}}


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
              f"tokens/s, {result['finish_reason']}; {raw['cached_tokens']} read before; "
              f"context {raw['prompt_tokens']} tokens]\n")
