"""What a stranger can make the broker hold or spend: one bound each, with its default.

Each field is an option of the ``broker`` executive (``max_message = 1048576``)
and a flag of ``raspy run broker`` (``--max-message 1048576``); docs/limits.md
says what happens beyond each.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from raspy.mdp import protocol as p

#: Bytes a queued request is counted for on top of its data: per frame, and twice for itself.
FRAME_COST = 64


def _bound(default: int | float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BrokerLimits:
    """The broker's bounds; every one is a positive number."""

    max_message: int = _bound(1 << 20, "bytes in one frame (ZMQ_MAXMSGSIZE) and in one request's frames together")
    max_frames: int = _bound(64, "frames in one message")
    queue_requests: int = _bound(1000, "requests waiting for the workers of one service")
    queue_bytes: int = _bound(8 << 20, "bytes of the requests waiting for one service")
    total_requests: int = _bound(10_000, "requests waiting for workers, all services together")
    total_bytes: int = _bound(32 << 20, "bytes of the requests waiting, all services together")
    unknown_services: int = _bound(1000, "services with no worker held while their requests wait")
    discovery_budget: float = _bound(0.003, "seconds one mmi.discovery may spend matching")
    request_expiry: float = _bound(30.0, "seconds a request waits for a worker before it is dropped")
    busy_timeout: float = _bound(300.0, "seconds a worker may hold one request before it is dropped")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = type(f.default)
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
                wanted = "a number > 0" if kind is float else "an integer >= 1"  # as the executive's options say
                raise ValueError(f"{f.name}: {value!r} is not {wanted}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BrokerLimits:
        """The bounds named in an executive's options, the defaults for the others."""
        return cls(**{f.name: options[f.name] for f in fields(cls) if f.name in options})

    @classmethod
    def flags(cls) -> list[tuple[str, type, Any, str]]:
        """``(flag, type, default, help)`` of each bound, for a command line."""
        return [(f"--{f.name.replace('_', '-')}", type(f.default), f.default, f.metadata["help"]) for f in fields(cls)]


def busy_refusal(service: bytes, reply: p.Frames) -> str | None:
    """The reason, when ``reply`` is the broker's ``500`` for a request to ``service``: full now, try later.

    The broker refuses in RasPy's convention, ``500`` then its reason, which begins as written by
    ``BrokerCore.full`` and ``new_service`` (raspy/mdp/_fast/pure.py). Any other reply, a service's
    own ``500`` among them, is the service's answer; so is the broker's ``400`` (a request over
    ``max_message`` or ``max_frames`` never passes).
    """
    if len(reply) != 2 or reply[0] != b"500":
        return None
    try:
        reason = p.unpack(reply[1])
    except p.ProtocolError:
        return None
    name = service.decode(errors="replace")
    busy = (f"queue of {name} full: ", "broker full: ", f"no worker for {name}, and ")
    return reason if isinstance(reason, str) and reason.startswith(busy) else None
