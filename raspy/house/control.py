"""Talking to a running supervisor without the broker: its board (``raspy status``) and its
control socket in the state directory (``raspy stop``, ``raspy restart NAME``, ``raspy reload``).

Both ends live here: :class:`ControlServer` in the supervisor's selector loop,
:func:`send_command` and :func:`status_report` in the CLI and the page.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import time
from pathlib import Path
from typing import Callable

from raspy.droplog import DropLog
from raspy.errors import RaspyError
from raspy.house.board import Board, BoardError, SlotState, State, board_name, pid_alive

#: The supervisor's control socket, in the state directory.
CONTROL_SOCKET = "control.sock"
#: Lines of a failing executive's log shown by ``raspy status``.
LOG_LINES = 3
#: Longest command line the supervisor reads.
MAX_COMMAND = 4096
#: Control connections open at once; one more is closed at once (an idle client holds its own).
MAX_CONNECTIONS = 16

Command = Callable[[list[str]], "tuple[bool, str]"]

log = logging.getLogger(__name__)


class NotRunning(RaspyError, RuntimeError):
    """No supervisor runs for this state directory."""


class ControlServer:
    """The supervisor's end: one command line in, one JSON line ``{ok, message, pid}`` out, per connection.

    Runs in the supervisor's selector loop and never blocks it: a client that
    sends nothing just holds its connection until it closes. A command may fork an
    executive while its connection is open: :meth:`close` in the child closes every
    connection too, or the child would hold the client's connection (and the client
    wait for its end) as long as it runs.
    """

    def __init__(self, path: Path, selector: selectors.BaseSelector, command: Command) -> None:
        self.path = path
        self.selector = selector
        self.command = command
        self._connections: set[socket.socket] = set()
        self._refused = DropLog(log, burst=3, period=60.0)
        try:
            path.unlink()  # a stale socket; the caller has ruled out a live supervisor
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return
        if len(self._connections) >= MAX_CONNECTIONS:
            conn.close()
            self._refused(f"control connection refused: {MAX_CONNECTIONS} are open already")
            return
        conn.setblocking(False)
        self._connections.add(conn)
        buffer = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, lambda c: self._read(c, buffer))

    def _read(self, conn: socket.socket, buffer: bytearray) -> None:
        try:
            data = conn.recv(MAX_COMMAND)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buffer += data
        if data and b"\n" not in buffer and len(buffer) < MAX_COMMAND:
            return
        self.selector.unregister(conn)
        with conn:
            words = bytes(buffer).split(b"\n")[0].decode("utf-8", "replace").split()
            ok, message = self.command(words)  # may fork: the connection is still in the set
            self._connections.discard(conn)
            conn.setblocking(True)
            conn.settimeout(1.0)
            try:
                conn.sendall(json.dumps({"ok": ok, "message": message, "pid": os.getpid()}).encode() + b"\n")
            except OSError:
                pass

    def close(self, unlink: bool = True) -> None:
        """Stop listening and close the connections; ``unlink=False`` in a forked child, whose
        parent still serves the path and its connections."""
        self.sock.close()
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        if unlink:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def send_command(state_dir: Path, command: str, timeout: float = 15.0) -> dict:
    """Send one command line to the supervisor; its reply ``{ok, message, pid}``."""
    path = state_dir / CONTROL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(f"no supervisor runs for {state_dir} (nothing listens on {path})") from None
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    try:
        return json.loads(reply)
    except ValueError:
        raise NotRunning(f"the supervisor closed {path} without a reply (stopping?)") from None


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited; False if it still runs after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def duration(seconds: float) -> str:
    """``42s``, ``5m07s``, ``3h12m``, ``2d04h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_slot(state: SlotState, now: float, now_wall: float) -> str:
    """One line of ``raspy status``; ``now`` monotonic, ``now_wall`` wall time."""
    alive = state.pid > 0
    uptime = duration(now - state.started_mono) if alive and state.started_mono else "-"
    beat = f"{state.heartbeat_age(now):.1f}s" if alive and state.heartbeat_mono else "-"
    last = state.last_exit.reason if state.last_exit and state.last_exit.reason else "-"
    line = (f"{state.name:<12} {str(state.state):<9} {state.pid if alive else '-':>7} {uptime:>6} "
            f"{state.restarts:>8} {beat:>6} {state.requests:>9}  {last}")
    if state.state in (State.BACKOFF, State.GAVE_UP) and state.next_start:
        line += f" (retry in {duration(state.next_start - now_wall)})"
    return line


HEADER = f"{'NAME':<12} {'STATE':<9} {'PID':>7} {'UP':>6} {'RESTARTS':>8} {'BEAT':>6} {'REQUESTS':>9}  LAST EXIT"


def status_report(state_dir: Path) -> tuple[list[str], int]:
    """The lines of ``raspy status`` and its exit status: 0 all running, 1 some not, 3 no supervisor."""
    try:
        board = Board.attach(board_name(state_dir))
    except BoardError:
        return [f"no supervisor runs for {state_dir} (no board): start one with 'raspy start'"], 3
    with board:
        states = board.snapshot()
        creator = board.creator_pid
    now, now_wall = time.monotonic(), time.time()
    lines = [HEADER] + [format_slot(state, now, now_wall) for state in states]
    for state in states:
        if state.state in (State.BACKOFF, State.GAVE_UP):
            lines += [f"    {state.name}: {text}" for text in _log_tail(state_dir, state.name)]
        if state.log_dropped:
            lines.append(f"    {state.name}: {state.log_dropped} bytes of its output were not written to its log "
                         "(disk full or read-only? the supervisor's log says why)")
    if not pid_alive(creator):
        lines.append(f"the supervisor (pid {creator}) is gone: this board is stale")
        return lines, 3
    return lines, 0 if all(state.state == State.RUNNING for state in states) else 1


def _log_tail(state_dir: Path, name: str) -> list[str]:
    """The last lines an executive wrote (its log file), for a failing one."""
    path = state_dir / "logs" / f"{name}.log"
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, 2) - 4096))
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip() and "raspy.supervisor:" not in line][-LOG_LINES:]
