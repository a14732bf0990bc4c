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
Options: :attr:`Mqtt.options`; their bounds: docs/limits.md.
"""
from __future__ import annotations

import logging
import time

from raspy.devices import DeviceError
from raspy.droplog import DropLog
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.options import Option, Rule, at_least, one_of, with_defaults
from raspy.house.statistics import SNMPGauge, SNMPString, oid
from raspy.mqtt.bridge import Bridge
from raspy.mqtt.imported import ImportedDevices
from raspy.mqtt.imports import ImportRule
from raspy.mqtt.link import Link
from raspy.mqtt.options import PROTOCOLS, BridgeOptions, bridge_options, check_patterns, check_rules, check_url
from raspy.mqtt.outbox import Outbox
from raspy.mqtt.topics import Topics, check_prefix
from raspy.state import keys
from raspy.state.kv.client import KvSubscriberClient

log = logging.getLogger(__name__)


def _between(low: int, high: int) -> Rule:
    return Rule(lambda value: low <= value <= high, f"an integer from {low} to {high}")


class Mqtt(DeviceServer):
    """The bridge between RasPy and an MQTT broker."""

    options = (
        Option("url", str, "mqtt://127.0.0.1:1883", "the MQTT broker: `mqtt://HOST[:PORT]`, or `mqtts://` for TLS",
               check_url),
        Option("username", str, None, "login name at the MQTT broker"),
        Option("password", str, None, "login password (or `password_file`)"),
        Option("password_file", str, None, "a file holding the login password (relative: in the state directory)"),
        Option("ca", str, None, "`mqtts`: the CA certificate(s) to trust; default the system's"),
        Option("cert", str, None, "`mqtts`: a client certificate (with `key`)"),
        Option("key", str, None, "`mqtts`: the client certificate's private key"),
        Option("client_id", str, None, "MQTT client id; default `raspy-<host>-<executive>`"),
        Option("protocol", str, "auto", "MQTT version: `auto` (5, else 3.1.1), `5` or `3.1.1`", one_of(*PROTOCOLS)),
        Option("discovery_prefix", str, "homeassistant", "Home Assistant's discovery prefix", check_prefix),
        Option("base", str, "raspy", "first topic level(s) of RasPy's own topics", check_prefix),
        Option("commands", list, ["*"], "name patterns of the switches and dimmers that take commands from MQTT",
               check_patterns),
        Option("import", list, [], "rules that bring MQTT topics in as devices ([keys](mqtt.md#importing-devices-"
               "from-mqtt))", check_rules),
        Option("max_payload", int, 65536, "largest MQTT payload taken in or sent out, in bytes",
               _between(256, 16 * 1024 * 1024)),
        Option("max_imported", int, 200, "most devices the import rules make", at_least(0)),
        Option("max_topics", int, 2000, "most retained topics held for the MQTT broker (3 per device)", at_least(16)),
    )

    @classmethod
    def check_options(cls, settings: Settings) -> None:
        """Files readable, and the rules that tie options together."""
        cls.read_options(settings)

    @classmethod
    def read_options(cls, settings: Settings) -> BridgeOptions:
        """The options as the bridge uses them (declared defaults filled in)."""
        return bridge_options(with_defaults(cls.options, settings.options), settings.state_dir)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        self.bridge_options = options = self.read_options(settings)
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
            "removed": ("devices gone from RasPy whose topics were cleared", lambda: bridge.counts.removed),
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
            self.wake()

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
