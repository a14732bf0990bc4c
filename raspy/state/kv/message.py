"""The clone pattern's wire: KVMsg, the commands, properties and the sequence's epoch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import zmq

from raspy.mdp.protocol import ProtocolError

#: Default endpoints: broker port P = 5514, then P+1, P+2, P+3.
SNAPSHOT_ENDPOINT = "tcp://127.0.0.1:5515"
PUBLISHER_ENDPOINT = "tcp://127.0.0.1:5516"
COLLECTOR_ENDPOINT = "tcp://127.0.0.1:5517"

ICANHAZ = b"ICANHAZ?"
KTHXBAI = b"KTHXBAI"
HUGZ = b"HUGZ"
#: Keys a publisher may not set: clients read them as commands.
RESERVED_KEYS = frozenset({ICANHAZ, KTHXBAI, HUGZ})

EPOCH_SHIFT = 32
#: Seconds between two HUGZ of an idle server (the kv executive's ``hugz_interval``, at most this).
HUGZ_INTERVAL = 5.0
#: A subscriber that heard nothing for this long (three HUGZ missed) takes a new snapshot.
SERVER_TIMEOUT = 3 * HUGZ_INTERVAL
#: The first HUGZ after a start come this soon, then twice as far apart each time up to the
#: interval: subscribers that reconnect to a restarted server learn its new epoch within a second.
FIRST_HUGZ = 0.25
#: Messages queued per peer before ZeroMQ drops (PUB) or refuses (snapshot):
#: large enough that a subscriber busy for a few seconds does not lose updates.
HWM = 100_000
#: Messages handled per socket before the loop looks at timers and other sockets.
BATCH = 1000

#: Default bounds of the map (the kv executive's options ``max_value``, ``max_keys``, ``max_bytes``):
#: bytes of one key's properties and body, keys, and bytes of all keys, properties and bodies.
MAX_VALUE = 64 * 1024
MAX_KEYS = 10_000
MAX_BYTES = 4 * 1024 * 1024
#: The collector does not even receive a frame above this (or above ``max_value``, if larger):
#: ZeroMQ drops the sender's connection instead (``ZMQ_MAXMSGSIZE``), so no update can fill the memory.
MAX_FRAME = 1024 * 1024

Callback = Callable[[str, "bytes | None", "dict[str, str]"], None]


# -- kvmsg ------------------------------------------------------------------

def encode_properties(properties: Mapping[str, str]) -> bytes:
    """``name=value\\n`` lines; names hold no ``=`` and nothing holds a newline."""
    lines = []
    for name, value in properties.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ProtocolError(f"property {name!r}={value!r}: names and values are strings")
        if not name or "=" in name or "\n" in name or "\n" in value:
            raise ProtocolError(f"bad property {name!r}={value!r}")
        lines.append(f"{name}={value}\n")
    return "".join(lines).encode()


def decode_properties(frame: bytes) -> dict[str, str]:
    """The dict of a properties frame; anything but well-formed lines raises."""
    if not frame:
        return {}
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        raise ProtocolError("properties are not UTF-8") from None
    if not text.endswith("\n"):
        raise ProtocolError("properties must end with a newline")
    properties = {}
    for line in text[:-1].split("\n"):
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise ProtocolError(f"bad property line {line[:40]!r}")
        if name in properties:
            raise ProtocolError(f"property {name!r} given twice")
        properties[name] = value
    if "ttl" in properties:
        parse_ttl(properties["ttl"])
    return properties


def parse_ttl(value: str) -> float:
    """Seconds of a ``ttl`` property: a finite number above zero."""
    try:
        seconds = float(value)
    except ValueError:
        raise ProtocolError(f"ttl {value[:20]!r} is not a number") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ProtocolError(f"ttl must be a positive number of seconds, got {value[:20]!r}")
    return seconds


@dataclass(slots=True)
class KVMsg:
    """One clone-pattern message: key, sequence, uuid, properties, body.

    An empty body means "delete the key".
    """

    key: str
    sequence: int = 0
    uuid: bytes = b""
    properties: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.key:
            raise ProtocolError("empty key")
        if not 0 <= self.sequence < 1 << 64:
            raise ProtocolError(f"sequence {self.sequence} does not fit 8 bytes")
        if len(self.uuid) not in (0, 16):
            raise ProtocolError(f"uuid is 16 bytes or empty, got {len(self.uuid)}")

    @property
    def ttl(self) -> float | None:
        """Seconds this key lives, or ``None`` for ever."""
        value = self.properties.get("ttl")
        return None if value is None else parse_ttl(value)

    def frames(self) -> list[bytes]:
        return [self.key.encode(), self.sequence.to_bytes(8, "big"), self.uuid,
                encode_properties(self.properties), self.body]

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> KVMsg:
        """The message of five frames; anything malformed raises :class:`ProtocolError`."""
        frames = [bytes(frame) for frame in frames]
        key, properties = check_frames(frames)
        return cls(key, int.from_bytes(frames[1], "big"), frames[2], properties, frames[4])

    def send(self, socket: zmq.Socket, flags: int = 0) -> None:
        socket.send_multipart(self.frames(), flags)

    @classmethod
    def recv(cls, socket: zmq.Socket, flags: int = 0) -> KVMsg:
        return cls.from_frames(socket.recv_multipart(flags))


def check_frames(frames: Sequence[bytes]) -> tuple[str, dict[str, str]]:
    """Key and properties of a well-formed kvmsg; anything else raises :class:`ProtocolError`.

    Checks without building a :class:`KVMsg`: the server runs it per update.
    """
    if len(frames) != 5:
        raise ProtocolError(f"kvmsg has 5 frames, got {len(frames)}")
    if len(frames[1]) != 8:
        raise ProtocolError(f"sequence is 8 bytes, got {len(frames[1])}")
    if len(frames[2]) not in (0, 16):
        raise ProtocolError(f"uuid is 16 bytes or empty, got {len(frames[2])}")
    try:
        key = frames[0].decode()
    except UnicodeDecodeError:
        raise ProtocolError("key is not UTF-8") from None
    if not key:
        raise ProtocolError("empty key")
    return key, decode_properties(frames[3])


def icanhaz(subtree: str) -> list[bytes]:
    """Snapshot request for every key that starts with ``subtree``."""
    return [ICANHAZ, subtree.encode()]


def parse_icanhaz(frames: Sequence[bytes]) -> tuple[bytes, bytes]:
    """``(identity, subtree)`` of a request the snapshot ROUTER received."""
    if len(frames) != 3 or frames[1] != ICANHAZ:
        raise ProtocolError("snapshot request must be ICANHAZ?, subtree")
    try:
        frames[2].decode()
    except UnicodeDecodeError:
        raise ProtocolError("subtree is not UTF-8") from None
    return frames[0], frames[2]


def check_kvset(frames: Sequence[bytes]) -> float | None:
    """Validate a collector message; its ttl in seconds, or ``None``."""
    key, properties = check_frames(frames)
    if frames[0] in RESERVED_KEYS:
        raise ProtocolError(f"key {key!r} is reserved")
    return parse_ttl(properties["ttl"]) if "ttl" in properties else None


def epoch_of(sequence: int) -> int:
    return sequence >> EPOCH_SHIFT
