"""The key/value map's subtrees and how keys are made: where devices, events and scenarios publish."""
from __future__ import annotations

#: Device readings: ``/device/<host>.<service>.<device>``.
DEVICE = "/device/"
#: Events, e.g. a cron job's runs: ``/event/cron/<job>``.
EVENT = "/event/"
#: Scenario state: ``/scenario/<name>``.
SCENARIO = "/scenario/"


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
