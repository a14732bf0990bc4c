"""A fish feeder: a RasPy executive of one's own.

The example of docs/write-an-executive.md; tests/test_examples.py runs it, so
the guide and this file cannot drift apart. In the configuration::

    [executives.feeder]
    kind = "feeder:Feeder"           # this file must be importable: PYTHONPATH=examples
    tanks = {reef = 2.0, guppies = 0.5}   # grams per portion
    daily_limit = 6.0                # grams per tank and day, whoever asks

    $ raspy call pi.feeder.tanks feed '"reef"'

The daily limit is the point: a scenario that fires twice, or a person who
forgets that the cron job already fed, must not overfeed. So what was fed
today is written to the state directory before the reply, and a feeder that
restarts (a crash, ``kill -9``, a reboot) still knows it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from raspy.errors import InvalidValue
from raspy.house.executive import Counters, Server, Settings
from raspy.house.options import POSITIVE, Option, has_type
from raspy.mdp import protocol as p
from raspy.mdp.service import Service, ServiceError, bad_request, not_found
from raspy.state.kv.client import KvPublisherClient

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")


def check_tanks(tanks: dict[str, Any]) -> None:
    """Grams per portion by tank name; a refusal names the tank, so the error points at its line."""
    if not tanks:
        raise ValueError("name at least one tank: tank name = grams per portion")
    for name, grams in tanks.items():
        if not _NAME.match(name):
            raise InvalidValue(f"bad tank name {name!r}: letters, digits, '_' and '-' only", name)
        if not has_type(grams, float) or grams <= 0:
            raise InvalidValue(f"{grams!r} is not a number above 0", name)


class Tanks(Service):
    """``<host>.<name>.tanks``: ``list_keys``, ``get TANK``, ``feed TANK``.

    Called from the worker's thread, while :meth:`changes` is called from the
    executive's main thread: one lock keeps the two apart.
    """

    def __init__(self, portions: dict[str, float], daily_limit: float, state_file: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.portions = portions
        self.daily_limit = daily_limit
        self.state_file = state_file
        self.clock = clock
        self.lock = threading.Lock()
        self.day = self._today()
        self.fed = dict.fromkeys(portions, 0.0)
        self._load()
        self.unpublished = set(portions)  # publish every tank once at start-up

    def _today(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.clock()))

    def _load(self) -> None:
        try:
            saved = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        if saved.get("day") == self.day:
            self.fed.update({tank: grams for tank, grams in saved["fed"].items()
                             if tank in self.fed})

    def _save(self) -> None:
        """Write, flush to disk, then rename: a power cut leaves the old file or the new one."""
        aside = self.state_file.with_suffix(".tmp")
        with open(aside, "w") as out:
            json.dump({"day": self.day, "fed": self.fed}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(aside, self.state_file)

    def _new_day(self) -> None:
        if self._today() != self.day:
            self.day, self.fed = self._today(), dict.fromkeys(self.portions, 0.0)
            self.unpublished |= set(self.portions)

    def _tank(self, args: Any) -> str:
        if not isinstance(args, str):
            raise bad_request(f"args must be a tank name, got {args!r}")
        if args not in self.portions:
            raise not_found(f"no tank {args!r}; tanks: {', '.join(sorted(self.portions))}")
        return args

    def do_list_keys(self, args: Any) -> list[str]:
        return sorted(self.portions)

    def do_get(self, args: Any) -> dict[str, float]:
        tank = self._tank(args)
        with self.lock:
            self._new_day()
            return {"fed_today": self.fed[tank], "portion": self.portions[tank],
                    "daily_limit": self.daily_limit}

    def do_feed(self, args: Any) -> dict[str, float]:
        tank = self._tank(args)
        with self.lock:
            self._new_day()
            portion = self.portions[tank]
            if self.fed[tank] + portion > self.daily_limit:
                raise ServiceError(p.FORBIDDEN, f"{tank} has had {self.fed[tank]:g} g today;"
                                   f" another {portion:g} g would pass the limit of"
                                   f" {self.daily_limit:g} g")
            self.dispense(tank, portion)
            self.fed[tank] += portion
            self._save()  # before the reply: a 200 means it is on disk
            self.unpublished.add(tank)
            return {"fed_today": self.fed[tank]}

    def dispense(self, tank: str, grams: float) -> None:
        """Where a real feeder turns its motor; this one only says so."""
        log.info("feeding %s: %g g", tank, grams)

    def changes(self) -> dict[str, float]:
        """Grams fed today of the tanks changed since the last call (so: not yet published)."""
        with self.lock:
            self._new_day()
            changed = {tank: self.fed[tank] for tank in sorted(self.unpublished)}
            self.unpublished.clear()
            return changed


class Feeder(Server):
    """The executive: ``<host>.<name>.tanks``, and ``.mmi`` and ``.statistics`` as every Server."""

    options = (
        Option("tanks", dict, None, "grams per portion, by tank name", check_tanks, required=True),
        Option("daily_limit", float, 10.0, "grams per tank and day, whoever asks", POSITIVE),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)  # checks each option against the declaration above
        portions = {tank: float(grams) for tank, grams in self.option("tanks").items()}
        Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
        self.tanks = Tanks(portions, float(self.option("daily_limit")),
                           Path(settings.state_dir) / f"{settings.name}.json")
        self.add_service("tanks", self.tanks)
        # 0.5 s, not the default 2.5: tick runs in the main thread, which must get back to its beat.
        self.publisher = KvPublisherClient(settings.kv_collector, timeout=0.5)

    def tick(self, now: float) -> None:
        """Every 0.5 s: publish what changed as ``/device/<host>.<name>.<tank>``."""
        changes = self.tanks.changes()
        for tank, grams in changes.items():
            body = p.pack({"value": grams, "unit": "g", "timestamp": now})
            try:
                self.publisher.send("/device/", f"{self.service}.{tank}", body)
            except TimeoutError:  # the kv server is not there (yet): try again at the next tick
                log.warning("kv collector not answering; %d tank(s) not published", len(changes))
                with self.tanks.lock:
                    self.tanks.unpublished |= set(changes)
                return

    def close(self) -> None:
        super().close()  # stops the workers first: nothing uses the publisher after this
        self.publisher.close()
