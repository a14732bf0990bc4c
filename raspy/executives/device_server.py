"""A device server: an executive that serves ``<host>.<service>.devices`` and publishes readings.

Readings go to the key/value publisher under ``/device/<host>.<service>.<name>``
from a thread of their own: a 1-Wire conversion takes ~750 ms per sensor, and
neither the executive's beat nor the MDP workers may wait for it. Every request
served wakes that thread, so a change a command made (a switch set) is in the
map at once rather than at the next poll.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from raspy.devices.service import DeviceService
from raspy.errors import RequestTimeout
from raspy.house.executive import Counters, Server, Settings
from raspy.mdp import protocol as p
from raspy.mdp.protocol import Frames
from raspy.state import keys
from raspy.state.kv.client import KvPublisherClient

log = logging.getLogger(__name__)


class DeviceServer(Server):
    """Serves a :class:`DeviceService` and publishes what its ``due(now)`` returns.

    The publisher sleeps until the service's ``next_due(now)`` (or
    :attr:`publish_interval` when it cannot tell) or until a request to the
    devices may have changed what is due (a device added, a poll interval set).
    """

    #: seconds between two looks at which readings are due, for a service that cannot tell when
    publish_interval = 0.5
    #: longest sleep of the publisher: a device's poll interval may be long
    longest_sleep = 60.0

    def __init__(self, settings: Settings, devices: DeviceService, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.devices = devices
        self._lock = threading.Lock()  # the handler and the publisher share the devices
        self._changed = threading.Event()  # a request was served: what is due may have changed
        self._sending = threading.Lock()  # a removal's deletion goes after any reading taken before it
        self.add_service("devices", self._locked)
        self.publisher = KvPublisherClient(settings.kv_collector)
        self.add_thread(self._publish_loop, name="publisher")

    def _locked(self, frames: Frames) -> Frames:
        try:
            with self._lock:
                before = set(self.devices.devices)
                reply = self.devices(frames)
                gone = before.difference(self.devices.devices)
        finally:
            self.wake()
        if gone:
            with self._sending:
                for name in sorted(gone):  # a removed device's key goes too, so no subscriber keeps a ghost
                    self._send(name, b"")
        return reply

    def reading_body(self, name: str, reading: Any) -> bytes:
        """What subscribers get: value, unit, timestamp, the poll interval (to judge staleness) and the
        device's oid (so the page knows a switch it can toggle).

        Called with the devices' lock held, so the device is still there.
        """
        device = self.devices.device(name)
        return p.pack({**reading.as_dict(), "poll": device.poll(), "oid": device.oid})

    def publish_due(self, now: float) -> int:
        with self._sending:
            with self._lock:
                due = [(name, self.reading_body(name, reading)) for name, reading in self.devices.due(now)]
            for name, body in due:
                self._send(name, body)
        return len(due)

    def _send(self, name: str, body: bytes) -> None:
        """Set the device's key (an empty body deletes it)."""
        try:
            self.publisher.send(keys.DEVICE, f"{self.service}.{name}", body)
        except RequestTimeout as exc:
            log.warning("%s of %s not published: %s", "reading" if body else "removal", name, exc)

    def _publish_loop(self) -> None:
        while not self.stopping(0):
            self._changed.clear()
            try:
                self.publish_due(time.time())
            except Exception:
                log.exception("publishing readings failed")
            self._changed.wait(self._sleep(time.time()))

    def wake(self) -> None:
        """Have the publisher look at what is due now: a reading came from elsewhere than a request."""
        self._changed.set()

    def _sleep(self, now: float) -> float:
        with self._lock:
            due = self.devices.next_due(now)
        if due is None:
            return self.publish_interval
        return min(max(due - now, 0.0), self.longest_sleep)

    def close(self) -> None:
        self._stop.set()
        self.wake()  # the publisher sees the stop at once
        super().close()
        self.publisher.close()
