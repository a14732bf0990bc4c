"""Sends pending requests to their services, in arrival order, with back-off."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from raspy.errors import RequestTimeout
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.limits import busy_refusal
from raspy.state.titanic.journal import Journal

log = logging.getLogger(__name__)

#: Shortest time between the starts of two rounds (seconds): a burst of requests is one round.
MIN_ROUND = 0.05


@dataclass
class DispatchSettings:
    """How pending requests are sent: timeouts and back-off in seconds, lanes in threads."""

    timeout: float = 10.0      # one attempt of a dispatched request
    probe_timeout: float = 1.0  # one mmi.service question
    retry_min: float = 0.5
    retry_max: float = 30.0
    lanes: int = 4             # services served at once


class Dispatcher:
    """Sends pending requests to their services, one lane (thread) per busy service.

    A lane sends its service's requests one at a time in arrival order and
    stores each reply before sending the next. A service that ``mmi.service``
    says is absent, that times out, or whose request the broker refuses as full
    (``500``, :func:`~raspy.mdp.limits.busy_refusal`: not the service's answer)
    is retried with exponential back-off.
    """

    def __init__(self, journal: Journal, broker: str, settings: DispatchSettings | None = None) -> None:
        self.journal = journal
        self.broker = broker
        self.settings = settings or DispatchSettings()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._lanes: dict[bytes, threading.Thread] = {}
        self._retry: dict[bytes, tuple[float, float]] = {}  # service -> (not before, current delay)
        self._thread: threading.Thread | None = None
        self.busy = 0  # requests the broker refused as full, to be sent again

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="titanic-dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New requests were stored: look again without waiting for the next round."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.join(timeout)

    def run(self) -> None:
        """Start lanes for services that are there, until :meth:`stop`.

        Between rounds it sleeps until new requests or a finished lane wake it, or
        a backed-off service may be tried again: idle, it does not wake at all.
        """
        probe = MajorDomoClient(self.broker, timeout=self.settings.probe_timeout, retries=1)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                began = time.monotonic()
                try:
                    self._round(probe)
                except Exception:
                    log.exception("dispatch round failed")
                self._wake.wait(self._idle())
                # at most ~20 rounds a second however often new requests wake us
                self._stop.wait(max(0.0, began + MIN_ROUND - time.monotonic()))
        finally:
            probe.close()

    def _idle(self) -> float | None:
        """Seconds until a backed-off service may be tried again; None: none is."""
        now = time.monotonic()
        with self._lock:
            waits = [at - now for at, _ in self._retry.values()]
        return max(0.0, min(waits)) if waits else None

    def _round(self, probe: MajorDomoClient) -> None:
        now = time.monotonic()
        services = self.journal.pending_services()
        with self._lock:  # forget the back-off of services whose requests were all closed
            for gone in self._retry.keys() - set(services):
                del self._retry[gone]
        for service in services:
            with self._lock:
                if service in self._lanes or self._retry.get(service, (0.0, 0.0))[0] > now:
                    continue
                if len(self._lanes) >= self.settings.lanes:
                    return
            if not self._present(probe, service):
                self._back_off(service, "not there")
                continue
            lane = threading.Thread(target=self._lane, args=(service,), daemon=True,
                                    name=f"titanic-lane-{service.decode(errors='replace')}")
            with self._lock:
                self._lanes[service] = lane
            lane.start()

    def _present(self, probe: MajorDomoClient, service: bytes) -> bool:
        try:
            return probe.send(b"mmi.service", [service])[:1] == [b"200"]
        except (RequestTimeout, p.ProtocolError) as exc:
            log.debug("mmi.service %s: %s", service, exc)
            return False

    def _back_off(self, service: bytes, why: str) -> None:
        with self._lock:
            delay = self._retry.get(service, (0.0, self.settings.retry_min / 2))[1] * 2
            delay = min(max(delay, self.settings.retry_min), self.settings.retry_max)
            self._retry[service] = (time.monotonic() + delay, delay)
        # INFO once per outage, not every retry of a service that is away for weeks
        log.log(logging.INFO if delay == self.settings.retry_min else logging.DEBUG,
                "service %s %s; retrying in %.1fs", service.decode(errors="replace"), why, delay)

    def _lane(self, service: bytes) -> None:
        """Send ``service``'s pending requests in order until none is left or one fails."""
        client = MajorDomoClient(self.broker, timeout=self.settings.timeout, retries=1)
        try:
            while not self._stop.is_set():
                batch = self.journal.pending(service)
                if not batch:
                    return
                for key, body in batch:
                    if self._stop.is_set():
                        return
                    try:
                        reply = client.send(service, body)
                    except RequestTimeout:
                        self._back_off(service, "not answering")
                        return
                    refusal = busy_refusal(service, reply)
                    if refusal is not None:  # the request stays pending
                        with self._lock:
                            self.busy += 1
                        self._back_off(service, f"refused by the broker ({refusal})")
                        return
                    self.journal.store_reply(key, reply)
                with self._lock:
                    self._retry.pop(service, None)
        except Exception:
            log.exception("dispatch to %s failed", service.decode(errors="replace"))
            self._back_off(service, "failing")
        finally:
            client.close()
            with self._lock:
                self._lanes.pop(service, None)
            self._wake.set()
