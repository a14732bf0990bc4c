"""The key/value map's keys: their grammar, the subtrees where devices, events and scenarios publish, and how keys are made.

A key is ``/segment/segment...``: each segment one or more printable ASCII
characters other than ``/`` and space, and never ``.`` or ``..`` (a key reads
like a path and must not pretend to climb one); at most :data:`MAX_KEY` bytes.
"""
from __future__ import annotations

import re

#: Device readings: ``/device/<host>.<service>.<device>``.
DEVICE = "/device/"
#: Events, e.g. a cron job's runs: ``/event/cron/<job>``.
EVENT = "/event/"
#: Scenario state: ``/scenario/<name>``.
SCENARIO = "/scenario/"
#: Each host's summary of its supervisor's board: ``/host/<hostname>``.
HOST = "/host/"

#: Longest key, in bytes.
MAX_KEY = 255
#: The grammar in words, for refusals.
GRAMMAR = "/segment/segment... of printable ASCII, no space, no empty, '.' or '..' segment"
_KEY = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[!-.0-~]+)+\Z")  # '/' (0x2f) is the one graphic character left out


def key_problem(key: bytes) -> str | None:
    """Why ``key`` is not a key of the map, or ``None`` when it is one."""
    if len(key) > MAX_KEY:
        return f"key of {len(key)} bytes (at most {MAX_KEY})"
    if not _KEY.match(key):
        return f"key {key[:60]!r} is not {GRAMMAR}"
    return None


def check_key(key: str) -> str:
    """``key``, or ``ValueError`` with the reason when it is not a key of the map."""
    problem = key_problem(key.encode())
    if problem is not None:
        raise ValueError(problem)
    return key


def join_key(subtree: str, key: str) -> str:
    """``subtree`` and ``key`` with exactly one ``/`` between them.

    ``join_key("/device/", "pi.fake.t")`` and ``join_key("/device", "/pi.fake.t")``
    are both ``/device/pi.fake.t``; an empty subtree leaves the key as it is.
    """
    if not subtree:
        return key
    return subtree.rstrip("/") + "/" + key.lstrip("/")


def name_in(subtree: str, key: str) -> str:
    """The part of ``key`` after ``subtree`` (``/device/pi.fake.t`` -> ``pi.fake.t``); other keys unchanged."""
    return key[len(subtree):] if key.startswith(subtree) else key
