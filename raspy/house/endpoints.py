"""Whether an endpoint can be bound, and who holds it when it cannot.

A house whose broker, key/value server or page cannot bind its endpoint must not
start: its other executives would connect to whatever holds the port (another
house). The supervisor asks :func:`check_bindable` before it forks anything, and
``raspy run`` before it runs a part alone; the holder is found in ``/proc``.
"""
from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

from raspy.errors import RaspyError

_TCP = re.compile(r"tcp://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)\Z")


class EndpointBusy(RaspyError, OSError):
    """An endpoint that cannot be bound; the message names the port and its holder when known."""


def check_bindable(endpoint: str) -> None:
    """Raise :class:`EndpointBusy` when ``endpoint`` cannot be bound now; other schemes pass."""
    if endpoint.startswith("ipc://"):
        _check_ipc(endpoint)
        return
    match = _TCP.match(endpoint)
    if match is None:
        return  # inproc://, an interface name, a wildcard port: nothing to check before ZeroMQ does
    host, port = match["host"].strip("[]"), int(match["port"])
    host = "" if host in ("*", "") else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ and the page bind
        try:
            probe.bind((host, port))
        except socket.gaierror:
            return  # a name ZeroMQ may know (an interface): let it say
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EndpointBusy(f"cannot bind {endpoint}: port {port} is in use{_tcp_user(port)}") from None
            raise EndpointBusy(f"cannot bind {endpoint}: {exc.strerror}") from None


def _check_ipc(endpoint: str) -> None:
    path = endpoint[len("ipc://"):]
    if path.startswith("@") or not os.path.exists(path):  # abstract namespace: ZeroMQ reports itself
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return  # a stale socket file: ZeroMQ replaces it
    raise EndpointBusy(f"cannot bind {endpoint}: something listens on it{_by(unix_inodes(path))}")


def port_users(port: int) -> tuple[set[int], bool]:
    """Who uses local TCP ``port``, from ``/proc/net/tcp*``: the inodes of the sockets listening on
    it (else of the connections using it), and whether closed connections on it wait out TIME_WAIT."""
    listening, connected, waiting = set(), set(), False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for fields in map(str.split, lines):
            if len(fields) <= 9 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            if fields[3] == "0A":
                listening.add(int(fields[9]))
            elif fields[3] == "06":
                waiting = True
            elif fields[9] != "0":
                connected.add(int(fields[9]))
    return listening or connected, waiting


def unix_inodes(path: str) -> set[int]:
    """Socket inodes bound to the Unix socket ``path``, from ``/proc/net/unix``."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {int(fields[6]) for fields in map(str.split, lines) if len(fields) > 7 and fields[7] == path}


def holders(inodes: set[int]) -> list[tuple[int, str]]:
    """``(pid, command name)`` of the processes with one of the socket ``inodes`` open (those we may see)."""
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for pid in sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(_readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                found.append((pid, Path(f"/proc/{pid}/comm").read_text().strip()))
        except OSError:  # gone, or another user's
            continue
    return found


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _tcp_user(port: int) -> str:
    inodes, waiting = port_users(port)
    if not inodes and waiting:
        return " by closed connections waiting out TIME_WAIT (free again within a minute)"
    return _by(inodes)


def _by(inodes: set[int]) -> str:
    found = holders(inodes)
    if found:
        return " by " + ", ".join(f"pid {pid} ({name})" for pid, name in found)
    return " (by a process of another user)" if inodes else ""
