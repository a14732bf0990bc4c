"""Helpers the tests share: free ports, polling with a deadline, child processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Children:
    """Child processes started by a test, all killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def python(self, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start ``python ARGS`` (e.g. ``-m raspy run broker``) with this checkout importable."""
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        proc = subprocess.Popen([sys.executable, *args], env=full_env, **kw)
        self.procs.append(proc)
        return proc

    def raspy(self, *args: str, **kw) -> subprocess.Popen:
        return self.python("-m", "raspy", *args, **kw)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
