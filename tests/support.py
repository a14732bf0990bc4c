"""Helpers the tests share: free ports, polling with a deadline, configurations, child processes."""
from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

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


def ask(endpoint: str, service: str | bytes, *body: bytes, timeout: float = 0.5) -> list[bytes] | None:
    """One request, one attempt: the reply frames, or ``None`` when nothing answered in ``timeout`` s."""
    from raspy.errors import RequestTimeout
    from raspy.mdp.client import MajorDomoClient

    with MajorDomoClient(endpoint, timeout=timeout, retries=1) as client:
        try:
            return client.send(service, list(body))
        except RequestTimeout:
            return None


def live(endpoint: str, service: str) -> bool:
    """The broker at ``endpoint`` knows a worker for ``service`` (8/MMI)."""
    return ask(endpoint, b"mmi.service", service.encode()) == [b"200"]


def broker_up(endpoint: str) -> bool:
    """A broker answers MMI at ``endpoint``."""
    return ask(endpoint, b"mmi.service", b"nothing") == [b"404"]


def toml_value(value: Any) -> str:
    """``value`` as TOML: str (or a path), int, float, bool, lists and dicts (inline tables) of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 'inf', '-inf', '0.5', '1e+16': all TOML
    if isinstance(value, (str, os.PathLike)):
        text = re.sub(r'[\x00-\x1f\x7f"\\]', lambda m: f"\\u{ord(m.group()):04x}", os.fspath(value))
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def write_config(path: Path, raspy: dict[str, Any], executives: dict[str, dict[str, Any]]) -> Path:
    """Write a RasPy configuration: the ``[raspy]`` table, then one ``[executives.NAME]`` table each.

    The file is replaced whole (written aside, then renamed), so a child still starting
    from the previous version never reads half of the new one.
    """
    lines = ["[raspy]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in raspy.items())]
    for name, options in executives.items():
        lines += ["", f"[executives.{toml_key(name)}]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in options.items())]
    path = Path(path)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(aside, path)
    return path


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

    def executive(self, config: Path, name: str, **kw) -> subprocess.Popen:
        """Start ``raspy run NAME --config FILE``: one executive of the configuration, alone."""
        return self.raspy("run", name, "--config", str(config), **kw)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def proc_status(pid: int, field: str) -> int:
    """A number of ``/proc/PID/status`` (``Threads``, ``VmRSS`` in KiB, ...): what ``ps`` and ``top`` read."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class ProcessProbe:
    """What ``/proc`` says of process ``pid``: its threads, resident memory and open files."""

    pid: int

    @property
    def threads(self) -> int:
        return proc_status(self.pid, "Threads")

    @property
    def rss_kb(self) -> int:
        return proc_status(self.pid, "VmRSS")

    @property
    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))
