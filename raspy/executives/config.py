"""The ``config`` executive: the hub serves each host its configuration; a satellite fetches its own.

On the hub (kind ``configurator``, run when its file has ``[hosts.*]`` tables), one worker per host
serves ``<hub>.config.<host>``; the broker lets only that host (and the hub) call it, by the
caller's CURVE key (:meth:`raspy.house.trust.Trust.may_call`). Each start announces every host's
configuration under ``/config/<host>`` with a fresh version, so a reload that changes the tables
reaches the satellites at once, without any of them polling.

On a satellite (kind ``hubconfig``), one thread follows ``/config/<host>``: at each announcement
it fetches the tables, checks them as the supervisor will, keeps them in the cache
(:mod:`raspy.house.hubconfig`) and, if they changed, asks its supervisor to reload, which
restarts only the executives that changed.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Any

from raspy.errors import RequestTimeout
from raspy.house.config import ConfigError, load_config
from raspy.house.control import NotRunning, send_command
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.hubconfig import SUBTREE, DamagedCache, announcement_key, executives_of, read_cache, write_cache
from raspy.house.options import Option
from raspy.house.trust import CONFIG
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.service import Service
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient, fetch_snapshot

log = logging.getLogger(__name__)

#: First wait before asking again (the hub's broker or kv away); doubles up to LONGEST_RETRY.
FIRST_RETRY = 1.0
LONGEST_RETRY = 60.0
#: How long one fetch waits for the hub's answer.
FETCH_TIMEOUT = 5.0


class HostConfig(Service):
    """``<hub>.config.<host>``: ``get`` answers ``{"executives": {name: table}}``, the host's tables."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def do_get(self, args: Any) -> dict:
        return {"executives": self.tables}


class Configurator(Executive):
    """The hub's side: serves and announces each host's ``[hosts.HOST.executives.*]``."""

    options = (Option("hosts", dict, {}, "set from the `[hosts.HOST.executives.NAME]` tables: host -> its tables"),)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.hosts: dict[str, dict[str, Any]] = self.option("hosts")
        self.version = secrets.token_hex(8)  # new at each start: every host fetches again, and compares
        for host, tables in self.hosts.items():
            self.add_worker(f"{self.service}.{host}", HostConfig(tables))
        self.publisher = KvPublisherClient(settings.kv_collector)
        self.add_thread(self._announce, name="announce")

    def announcement(self, host: str) -> str:
        return json.dumps({"service": f"{self.service}.{host}", "version": self.version})

    def _announce(self) -> None:
        """Publish ``/config/<host>`` for each host, then withdraw those of hosts no longer in the file."""
        pending = sorted(self.hosts)
        delay = FIRST_RETRY
        while pending:
            try:
                self.publisher.send(SUBTREE, pending[0], self.announcement(pending[0]))
                pending.pop(0)
                continue
            except RequestTimeout as exc:
                log.warning("%s; announcing again in %.0fs", exc, delay)
            if self.stopping(delay):
                return
            delay = min(2 * delay, LONGEST_RETRY)
        log.info("announced the configuration of %s (version %s)", ", ".join(sorted(self.hosts)) or "no host",
                 self.version)
        try:
            self._withdraw_removed()
        except RequestTimeout as exc:
            log.warning("cannot withdraw the announcements of removed hosts: %s", exc)
        self.stopping(None)  # done: the thread lives as long as the executive

    def _withdraw_removed(self) -> None:
        for key in fetch_snapshot(SUBTREE, self.settings.kv_snapshot)[1]:
            host = key[len(SUBTREE):]
            if host not in self.hosts:
                self.publisher.send(SUBTREE, host, b"")
                log.info("withdrew %s: the file has no [hosts.%s] any more", key, host)


class HubConfig(Executive):
    """The satellite's side: follows ``/config/<host>``, fetches, checks, caches, reloads."""

    options = (Option("file", str, None, "set by the configuration: the satellite's own file", required=True),)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.key = announcement_key(settings.hostname)
        self._announced: str | None = None  # the service the hub last announced for this host
        self._wake = threading.Event()
        self.subscriber = KvSubscriberClient(self.key, settings.kv_snapshot, settings.kv_publisher,
                                             callback=self._on_announcement)
        self.add_thread(self._follow, self._wake.set, "fetch")

    def _on_announcement(self, key: str, body: bytes | None, properties: dict) -> None:
        if key != self.key:
            return  # /config/shed2 under /config/shed
        if body is None:
            log.warning("the hub withdrew the configuration of %s: the running one is kept", self.settings.hostname)
            return
        try:
            service = json.loads(body)["service"]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropped an announcement under %s that is not {\"service\": ...}: %s", key, exc)
            return
        if not (isinstance(service, str) and service.endswith(f".{CONFIG}.{self.settings.hostname}")):
            log.warning("dropped an announcement under %s naming %r", key, service)
            return
        self._announced = service
        self._wake.set()

    def _follow(self) -> None:
        """Fetch at each announcement; while the hub does not answer, ask again with back-off."""
        self.subscriber.start()
        retry, backoff = None, FIRST_RETRY  # None: wait for the next announcement
        try:
            while True:
                self._wake.wait(retry)  # a new announcement does not wait for the back-off
                if self.stopping(0):
                    return
                self._wake.clear()
                if self._fetch(self._announced):
                    retry, backoff = None, FIRST_RETRY
                else:
                    retry, backoff = backoff, min(2 * backoff, LONGEST_RETRY)
        finally:
            self.subscriber.stop()

    def _fetch(self, service: str | None) -> bool:
        """Fetch and apply the configuration ``service`` serves; False when it should be asked again later."""
        if service is None:
            return True
        try:
            with MajorDomoClient(self.settings.broker, timeout=FETCH_TIMEOUT, retries=1) as client:
                status, result = client.call(service, "get")
        except RequestTimeout:
            log.warning("no answer from %s in %.0fs", service, FETCH_TIMEOUT)
            return False
        if status != p.OK or not isinstance(result, dict):
            log.error("%s answered %s %s: the running configuration is kept", service, status, result)
            return True
        self.apply(result.get("executives"), service)
        return True

    def apply(self, tables: Any, source: str) -> None:
        """Check ``tables`` as the supervisor will, cache them, and reload if they changed."""
        state_dir, host = self.settings.state_dir, self.settings.hostname
        try:
            config = load_config(self.option("file"))
        except ConfigError as exc:
            log.error("the configuration from %s is not checked, the running one is kept: %s", source, exc)
            return
        try:
            executives_of(config, tables)
        except ConfigError as exc:  # names the cache, where the answer was not written
            log.error("the configuration from %s is refused, the running one is kept: %s: %s", source, exc.key,
                      exc.reason)
            return
        try:
            if read_cache(state_dir, host) == tables:
                log.info("the configuration from %s is the one running", source)
                return
        except DamagedCache as exc:
            log.warning("%s: replacing it", exc)
        write_cache(state_dir, host, tables)
        try:
            reply = send_command(state_dir, "reload")
        except (NotRunning, OSError) as exc:
            log.error("configuration from %s cached; the supervisor did not reload: %s", source, exc)
            return
        level = logging.INFO if reply.get("ok") else logging.ERROR
        log.log(level, "configuration from %s: %s", source, reply.get("message"))
