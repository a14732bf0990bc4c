"""The services the broker answers itself: 8/MMI and RasPy's additions, shared by both cores.

``mmi.discovery`` matches a client's regular expression against every live
service name, in the broker's thread, so what one pattern may cost is bounded:
the pattern's length and its counted repetitions (the ``regex`` module unrolls
``{m,n}`` when it compiles, and no clock can interrupt a compile), then a time
budget for the matching itself (``regex`` checks a timeout while it
backtracks, which Python's ``re`` cannot do).
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import regex

from raspy.errors import RaspyError
from raspy.mdp import protocol as p

if TYPE_CHECKING:
    from raspy.mdp._fast.pure import BrokerCore

#: Longest ``mmi.discovery`` pattern, in characters.
PATTERN_MAX = 128
#: Largest product of the counts of a pattern's counted repetitions (``{m,n}``).
REPEAT_MAX = 100
#: A counted repetition as written (an escaped brace counts too, which only errs on the safe side).
_COUNTED = re.compile(r"\{(\d*)(?:,(\d*))?\}")


class PatternError(RaspyError, ValueError):
    """A discovery pattern the broker will not match: the reason is the client's 400."""


def live_services(services: dict) -> list[str]:
    """Names of the services that have at least one worker, sorted."""
    return sorted(n.decode(errors="replace") for n, s in services.items() if s.workers)


def compile_pattern(text: str) -> regex.Pattern:
    """``text`` compiled, once it is known that compiling it is cheap."""
    if len(text) > PATTERN_MAX:
        raise PatternError(f"pattern over {PATTERN_MAX} characters")
    unrolled = 1
    for low, high in _COUNTED.findall(text):
        unrolled *= max(int(high or low or 0), 1)
        if unrolled > REPEAT_MAX:
            raise PatternError(f"counted repetitions unroll to over {REPEAT_MAX} copies")
    try:
        return regex.compile(text, cache_pattern=False)  # a cache of strangers' patterns would be theirs to fill
    except regex.error as exc:
        raise PatternError(f"bad regular expression: {exc}") from None


def discover(names: list[str], text: str, budget: float) -> list[str]:
    """The ``names`` that ``text`` matches, found within ``budget`` seconds of matching."""
    pattern = compile_pattern(text)
    deadline = time.monotonic() + budget
    found = []
    try:
        for name in names:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if pattern.search(name, timeout=left):
                found.append(name)
    except TimeoutError:
        raise PatternError(f"matching took over its budget of {budget * 1000:g} ms") from None
    return found


def answer(core: BrokerCore, service: bytes, body: list[bytes]) -> list[bytes]:
    """The broker's reply to an ``mmi.*`` request."""
    services = core.services
    if service == b"mmi.service":
        svc = services.get(body[0]) if body else None
        return [b"200" if svc is not None and svc.workers else b"404"]
    if service == b"mmi.services":
        return p.reply(p.OK, live_services(services))
    if service == b"mmi.discovery":
        if not body or not body[0]:
            return p.reply(p.BAD_REQUEST, "mmi.discovery needs a regular expression")
        try:
            return p.reply(p.OK, discover(live_services(services), body[0].decode(), core.limits.discovery_budget))
        except (PatternError, UnicodeDecodeError) as exc:
            return p.reply(p.BAD_REQUEST, str(exc))
    if service == b"mmi.workers":
        return p.reply(p.OK, {
            n.decode(errors="replace"): {"workers": s.workers, "idle": len(s.idle), "queued": len(s.requests)}
            for n, s in services.items()
        })
    if service == b"mmi.broker":
        return p.reply(p.OK, {
            "requests": core.requests, "replies": core.replies, "dropped": core.drop.dropped,
            "refused": core.refused, "expired": core.expired, "queued": core.queued,
            "queued_bytes": core.queued_bytes, "services": len(services), "unknown": core.unknown,
            "workers": len(core.workers),
        })
    return [b"501"]
