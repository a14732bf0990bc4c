"""Frames of 7/MDP, 8/MMI and RasPy's service convention, with no sockets.

Everything that reads frames from the wire goes through here, and every
malformed message raises :class:`ProtocolError`, never an ``IndexError`` from
deep inside a caller.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import msgpack

from raspy.errors import RaspyError

#: 7/MDP headers.
CLIENT = b"MDPC01"
WORKER = b"MDPW01"

#: 7/MDP worker commands (one byte each).
READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
COMMANDS = {READY: "READY", REQUEST: "REQUEST", REPLY: "REPLY", HEARTBEAT: "HEARTBEAT", DISCONNECT: "DISCONNECT"}

#: 8/MMI: services whose name starts with this are answered by the broker.
MMI_PREFIX = b"mmi."

#: Status codes of RasPy services (and of MMI, which uses the same words).
OK = 200
PENDING = 300
BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
ERROR = 500
NOT_IMPLEMENTED = 501
STATUSES = frozenset({OK, PENDING, BAD_REQUEST, FORBIDDEN, NOT_FOUND, ERROR, NOT_IMPLEMENTED})

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
#: One part of a dotted name (host, service, device, job, scenario): letters, digits, ``_`` and ``-``.
NAME_PART = r"[A-Za-z0-9_\-]+"
NAME = re.compile(NAME_PART + r"\Z")
#: A service name as 7/MDP has it: a printable string (ASCII here), of at most 255 bytes.
SERVICE_NAME = re.compile(rb"[\x20-\x7e]{1,255}\Z")

Frames = list[bytes]


class ProtocolError(RaspyError, ValueError):
    """A message that does not follow the protocol; the receiver drops it."""


def routing_key(hostname: str, service: str, suffix: str | None = None) -> str:
    """The service name ``<hostname>.<service>[.<suffix>]``."""
    parts = [hostname, service] + ([suffix] if suffix else [])
    for part in parts:
        if not NAME.match(part):
            raise ProtocolError(f"bad name part {part!r}: letters, digits, '_' and '-' only")
    return ".".join(parts)


# -- 7/MDP, client side ---------------------------------------------------

def client_request(service: bytes, body: Sequence[bytes]) -> Frames:
    """Frames a DEALER client sends (REQ adds the empty frame itself: drop it there).

    7/MDP gives a request one body frame at least: an empty body is sent as one empty frame.
    """
    return [b"", CLIENT, service, *(body or [b""])]


def parse_client(frames: Sequence[bytes]) -> tuple[bytes, Frames]:
    """``(service, body)`` of a client message, after the empty delimiter."""
    if len(frames) < 4 or frames[0] != b"" or frames[1] != CLIENT:
        raise ProtocolError("client message must be '', MDPC01, service, body (one frame or more)")
    if not frames[2]:
        raise ProtocolError("client message names no service")
    return frames[2], list(frames[3:])


# -- 7/MDP, worker side ---------------------------------------------------

def worker_message(command: bytes, *frames: bytes) -> Frames:
    """Frames a worker or the broker sends on the worker side."""
    return [b"", WORKER, command, *frames]


def parse_worker(frames: Sequence[bytes]) -> tuple[bytes, Frames]:
    """``(command, rest)`` of a worker-side message, checked frame by frame.

    READY carries one service name; REQUEST and REPLY carry a client address,
    an empty frame and a body of one frame or more; HEARTBEAT and DISCONNECT carry nothing.
    """
    if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
        raise ProtocolError("worker message must be '', MDPW01, command, ...")
    command, rest = frames[2], list(frames[3:])
    if command == READY:
        if len(rest) != 1 or not rest[0]:
            raise ProtocolError("READY carries exactly one service name")
    elif command in (REQUEST, REPLY):
        if len(rest) < 3 or not rest[0] or rest[1] != b"":
            raise ProtocolError(f"{COMMANDS[command]} needs client address, '', body (one frame or more)")
    elif command in (HEARTBEAT, DISCONNECT):
        if rest:
            raise ProtocolError(f"{COMMANDS[command]} carries no frames")
    else:
        raise ProtocolError(f"unknown worker command {command[:8]!r}")
    return command, rest


# -- RasPy services: [command, args?] in, [status, result?] out -----------

_NOARGS = object()


def pack(value: Any) -> bytes:
    """One msgpack frame."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    """Value of one msgpack frame; junk raises :class:`ProtocolError`."""
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not msgpack: {exc}") from None


def unpack_map(frame: bytes) -> dict:
    """A msgpack frame that must hold a map (a reading, a scenario's state); else :class:`ProtocolError`."""
    value = unpack(frame)
    if not isinstance(value, dict):
        raise ProtocolError(f"a map is expected, got {type(value).__name__}")
    return value


def map_or_drop(frame: bytes, drop: Callable[[str], Any], where: str) -> dict | None:
    """:func:`unpack_map` for a callback that cannot refuse: ``None`` once ``drop`` (a DropLog) was told why."""
    try:
        return unpack_map(frame)
    except ProtocolError as exc:
        drop(f"{where}: {exc}")
        return None


def request(command: str, args: Any = _NOARGS) -> Frames:
    """Request frames ``[command, msgpack(args)]``; args are optional."""
    word = command.encode("ascii")
    if not _WORD.match(word):
        raise ProtocolError(f"bad command word {command!r}")
    return [word] if args is _NOARGS else [word, pack(args)]


def parse_request(frames: Sequence[bytes]) -> tuple[str, Any]:
    """``(command, args)`` of a request; args is ``None`` when absent."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError("request must be command, args?")
    if not _WORD.match(frames[0]):
        raise ProtocolError(f"bad command word {frames[0][:32]!r}")
    args = unpack(frames[1]) if len(frames) == 2 else None
    return frames[0].decode("ascii"), args


def reply(status: int, result: Any = _NOARGS) -> Frames:
    """Reply frames ``[status, msgpack(result)]``; the result is optional."""
    head = status_frame(status)
    return [head] if result is _NOARGS else [head, pack(result)]


def status_frame(status: int) -> bytes:
    """The frame of a status, such as ``b"200"``."""
    if status not in STATUSES:
        raise ProtocolError(f"unknown status {status}")
    return str(status).encode("ascii")


def parse_status(frame: bytes) -> int:
    """Status code of a status frame such as ``b"200"``."""
    if len(frame) != 3 or not frame.isdigit() or int(frame) not in STATUSES:
        raise ProtocolError(f"bad status frame {frame[:16]!r}")
    return int(frame)


def parse_reply(frames: Sequence[bytes]) -> tuple[int, Any]:
    """``(status, result)`` of a reply; result is ``None`` when absent."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError("reply must be status, result?")
    status = parse_status(frames[0])
    return status, (unpack(frames[1]) if len(frames) == 2 else None)
