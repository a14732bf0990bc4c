"""The ``mqtt`` executive: RasPy's devices in Home Assistant, and MQTT devices in RasPy.

Out: every ``/device/`` reading of the key/value map goes to retained MQTT
topics, with Home Assistant discovery; commands on a device's ``set`` topic
become ``set`` requests through the RasPy broker (:mod:`raspy.mqtt.bridge`).
In: the ``import`` rules turn external topics into devices under
``/device/<host>.<name>.<device>``, served as ``<host>.<name>.devices`` like
any device server (:mod:`raspy.mqtt.imported`).

The connection state is in the statistics (``<host>.<name>.snmp.connected``:
1 or 0, ``connection``: what happened last and since when) and on the board
(extra counter 0: connections made, 1: connections lost).
Options and their bounds: :data:`raspy.mqtt.options.OPTIONS`, docs/mqtt.md.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from raspy.devices import DeviceError
from raspy.droplog import DropLog
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.statistics import SNMPGauge, SNMPString, oid
from raspy.mqtt.bridge import Bridge
from raspy.mqtt.imported import ImportedDevices
from raspy.mqtt.imports import ImportRule
from raspy.mqtt.link import Link
from raspy.mqtt.options import parse
from raspy.mqtt.outbox import Outbox
from raspy.mqtt.topics import Topics
from raspy.state import keys
from raspy.state.kv.client import KvSubscriberClient

log = logging.getLogger(__name__)


class Mqtt(DeviceServer):
    """The bridge between RasPy and an MQTT broker; options in :mod:`raspy.mqtt.options`."""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        parse(options)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        self.options = options = parse(settings.options)
        self.drop = DropLog(log)
        self.outbox = Outbox(options.max_topics)
        self.topics = Topics(options.base, options.discovery_prefix)
        client_id = options.client_id or f"raspy-{settings.hostname}-{settings.name}"
        self.link = Link(options, client_id, self.topics.status(settings.hostname), self.outbox, self.drop)
        super().__init__(settings, ImportedDevices(options.max_imported, self.link.command), slot)
        self.bridge = Bridge(self.topics, self.outbox, self.link.wake, settings.hostname, settings.name,
                             options.commands, self.drop, settings.broker, options.max_payload)
        self.kv = KvSubscriberClient(keys.DEVICE, settings.kv_snapshot, settings.kv_publisher, self.bridge.reading)
        self.link.subscribe(self.topics.ha_status, self.bridge.home_assistant)
        self.link.subscribe(self.topics.commands, self.bridge.command)
        self.link.subscribe(self.topics.announced(settings.hostname), self.bridge.earlier)
        for rule in options.imports:
            self.link.subscribe(rule.topic, self._importer(rule))
        self.add_thread(self.bridge.requests.run, self.bridge.requests.stop, "mqtt-requests")
        self._statistics()
        self._board = [0, 0]  # connects and losses already counted on the board

    def _statistics(self) -> None:
        link, bridge, outbox = self.link, self.bridge, self.outbox
        gauges = {
            "connected": ("1 while connected to the MQTT broker, else 0", lambda: int(link.connected.is_set())),
            "published": ("messages handed to the MQTT broker", lambda: link.published),
            "received": ("messages received from the MQTT broker", lambda: link.received),
            "dropped": ("bad or refused input: malformed, too large, unknown device, beyond a bound",
                        lambda: self.drop.dropped),
            "readings": ("key/value readings bridged to MQTT", lambda: bridge.counts.readings),
            "commands": ("set requests from MQTT that the device confirmed", lambda: bridge.counts.commands),
            "command_errors": ("set requests from MQTT that failed", lambda: bridge.counts.command_errors),
            "devices": ("RasPy devices shown on MQTT", lambda: len(bridge.devices)),
            "imported": ("devices made by the import rules", lambda: len(self.devices.devices)),
            "topics": ("retained topics held for the broker (max_topics)", lambda: len(outbox)),
            "pending": ("retained topics waiting for the broker", lambda: outbox.pending),
        }
        for key, (doc, read) in gauges.items():
            self.statistics.add(SNMPGauge(oid(self.service, key), doc, read))
        self.connection = self.statistics.add(SNMPString(oid(self.service, "connection"), "the MQTT connection's state"))

    def _importer(self, rule: ImportRule):
        def take(topic: str, payload: bytes, retained: bool) -> None:
            try:
                found = rule.readings(topic, payload.decode("utf-8"))
            except UnicodeDecodeError:
                self.drop(f"import from {topic}: payload is not UTF-8")
                return
            except ValueError as exc:
                self.drop(f"import from {topic}: {exc}")
                return
            now = time.time()
            with self._lock:
                for reading in found:
                    try:
                        self.devices.take(rule, topic, reading, now)
                    except DeviceError as exc:
                        self.drop(f"import from {topic}: {exc}")

        return take

    def run(self) -> None:
        self.link.start()
        self.kv.start()
        super().run()

    def tick(self, now: float) -> None:
        self.link.maintain()
        self.connection.value = self.link.state
        for index, total in enumerate((self.link.connects, self.link.losses)):
            if total > self._board[index]:
                self.slot.count_extra(index, total - self._board[index])
                self._board[index] = total
        if self.kv.wait_synced(0):
            if not self.bridge.online:
                self.bridge.ready(self.kv.items())
            self.bridge.sweep(lambda: [keys.name_in(keys.DEVICE, key) for key, _ in self.kv.items()])

    def close(self) -> None:
        self.kv.stop()
        super().close()
        self.link.stop()
