"""A supervised house for the tests: ``raspy start --config`` on a temporary state directory,
with the test kinds of ``supervised_kinds`` importable."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support import ROOT, free_endpoint, wait_for

from raspy.errors import RequestTimeout
from raspy.house.board import State, house_states
from raspy.mdp.client import MajorDomoClient

HOST = "t"
ENV = {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
TIMINGS = {"heartbeat": 0.2, "liveness": 3, "backoff_start": 0.05, "backoff_cap": 0.2, "backoff_reset": 0.5,
           "give_up_after": 3, "gave_up_retry": 60, "stop_timeout": 1.0, "hang_timeout": 5.0}
ECHOES = """
[executives.broker]

[executives.one]
kind = "echo"

[executives.two]
kind = "echo"
"""


class House:
    """A supervisor started with ``raspy start --config`` on a temporary state directory."""

    def __init__(self, children, tmp_path: Path) -> None:
        self.children = children
        self.tmp = tmp_path
        self.endpoint = free_endpoint()
        self.kv = {name: free_endpoint() for name in ("snapshot", "publisher", "collector")}
        self.state_dir = tmp_path / "state"
        self.config = tmp_path / "raspy.toml"
        self.proc: subprocess.Popen | None = None

    def write(self, executives: str, **timings: float) -> None:
        lines = "".join(f"{key} = {value}\n" for key, value in dict(TIMINGS, **timings).items())
        kv = "".join(f'kv_{name} = "{endpoint}"\n' for name, endpoint in self.kv.items())
        self.config.write_text(f'[raspy]\nhostname = "{HOST}"\nstate_dir = "{self.state_dir}"\n'
                               f'broker = "{self.endpoint}"\n{kv}{lines}\n{executives}')

    def start(self, executives: str = ECHOES, running: tuple[str, ...] = ("broker", "one", "two"),
              env: dict | None = None):
        if not self.config.exists():
            self.write(executives)
        output = open(self.tmp / "supervisor.out", "ab")
        self.proc = self.children.raspy("start", "--config", str(self.config), env=dict(ENV, **(env or {})),
                                        stdout=output, stderr=subprocess.STDOUT)
        output.close()
        wait_for(lambda: self._running(running), what=f"{running} running")
        return self.proc

    def _running(self, names: tuple[str, ...]) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            output = (self.tmp / "supervisor.out").read_text(errors="replace")
            raise AssertionError(f"raspy start exited with {self.proc.returncode}:\n{output[-2000:]}")
        states = self.states(*names)
        return bool(states) and all(states[n].state == State.RUNNING for n in names)

    def stop(self) -> None:
        """SIGTERM, as systemd would: the supervisor removes its board (SIGKILL would leave it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def states(self, *names: str) -> dict:
        states = house_states(self.state_dir)
        return states if all(n in states for n in names) else {}

    def pid(self, name: str) -> int:
        return self.states(name)[name].pid

    def raspy(self, *args: str, config: bool = True, env: dict | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess:
        """``raspy ARGS --config FILE`` (without ``--config`` if not ``config``) as a user would type it."""
        return subprocess.run([sys.executable, "-m", "raspy", *args, *(["--config", str(self.config)] if config else [])],
                              env={**os.environ, **ENV, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def call(self, service: str, command: str, args=None, timeout: float = 0.3, retries: int = 10):
        with MajorDomoClient(self.endpoint, timeout=timeout, retries=retries) as client:
            return client.call(f"{HOST}.{service}", command, *([] if args is None else [args]))

    def echo(self, name: str, timeout: float = 0.3, retries: int = 10) -> bool:
        with MajorDomoClient(self.endpoint, timeout=timeout, retries=retries) as client:
            try:
                return client.send(f"{HOST}.{name}.echo", [b"hello"]) == [b"hello"]
            except RequestTimeout:
                return False


def mount_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted on ``path`` (a fixture's body): a disk a test can fill or make read-only.

    Mounting needs root, as CI runs; elsewhere the test is skipped and says why.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


def fill(disk: Path) -> None:
    """Write to ``disk`` until it is full."""
    chunk = b"\0" * 65536
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
