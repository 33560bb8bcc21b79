"""The parent side of crash-safe fuzzing: a worker process (worker.py, or any command that
speaks its one-JSON-line protocol) that is restarted after it dies, with the case that
killed it reported."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

TESTS = Path(__file__).resolve().parents[1]


class WorkerCrashed(AssertionError):
    pass


class Worker:
    """``run(case)`` -> the worker's JSON answer; raises WorkerCrashed (with the signal and
    the case) when the process dies on it, and starts a fresh process for the next case."""

    def __init__(self, command: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
                 timeout: float = 120.0):
        self.command = command or [sys.executable, str(TESTS / "fuzz" / "worker.py")]
        self.timeout = timeout  # seconds a case may take before it counts as a hang
        self.env = {**os.environ, **(env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self.cases = 0

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=self.env)
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"fuzz worker failed to start: {self.proc.stderr.read()[-2000:]}")

    def run(self, case: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.cases += 1
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise WorkerCrashed(f"the case hung (> {self.timeout:.0f} s): {json.dumps(case)}")
        line = self.proc.stdout.readline()
        if line:
            return json.loads(line)
        code = self.proc.wait()
        err = self.proc.stderr.read()[-3000:]
        self.proc = None
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise WorkerCrashed(f"the process died ({how}) on case {json.dumps(case)}\n{err}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.proc = None
