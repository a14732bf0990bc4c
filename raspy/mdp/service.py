"""RasPy's service convention as a class: ``[command, args?]`` in, ``[status, result?]`` out.

A subclass defines one ``do_<command>(args)`` method per command. It returns
the result (sent with ``200``) or raises :class:`ServiceError` with another
status and a reason. The object is the handler an MDP worker calls, so a
service can be tested by calling it with frames, without any socket.
"""
from __future__ import annotations

import logging
from typing import Any

from raspy.errors import RaspyError
from raspy.mdp import protocol
from raspy.mdp.protocol import Frames, ProtocolError

log = logging.getLogger(__name__)


class ServiceError(RaspyError):
    """A request that gets a non-200 status, with the reason sent back."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def bad_request(reason: str) -> ServiceError:
    return ServiceError(protocol.BAD_REQUEST, reason)


def not_found(reason: str) -> ServiceError:
    return ServiceError(protocol.NOT_FOUND, reason)


class Service:
    """Dispatches RasPy requests to ``do_<command>`` methods."""

    def commands(self) -> list[str]:
        """The commands this service answers."""
        return sorted(name[3:] for name in dir(self) if name.startswith("do_"))

    def __call__(self, frames: Frames) -> Frames:
        try:
            command, args = protocol.parse_request(frames)
        except ProtocolError as exc:
            return protocol.reply(protocol.BAD_REQUEST, str(exc))
        method = getattr(self, "do_" + command, None)
        if method is None:
            return protocol.reply(protocol.NOT_IMPLEMENTED, f"unknown command {command!r}; known: {self.commands()}")
        try:
            result: Any = method(args)
        except ServiceError as exc:
            return protocol.reply(exc.status, exc.reason)
        except Exception as exc:
            log.exception("%s %s failed", type(self).__name__, command)
            return protocol.reply(protocol.ERROR, f"{type(exc).__name__}: {exc}")
        return protocol.reply(protocol.OK, result)
