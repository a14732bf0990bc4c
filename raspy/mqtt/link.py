"""The bridge's connection to the MQTT broker: a paho-mqtt 2 client, and publishing what the outbox holds.

paho runs the network in a thread of its own (``connect_async`` and
``loop_start``), reconnects with back-off (``reconnect_delay_set``) and calls
back in that thread. The thread that changes the
:class:`~raspy.mqtt.outbox.Outbox` (the key/value thread, mostly) publishes
what changed at once, while the broker is connected, until paho's bounded
queue is full; a PUBACK (``on_publish``) sends more. One thread publishes at a
time and the others never wait for it (a try-lock: the publishing thread looks
again before it leaves), so no thread ever blocks on the bridge while paho holds
one of its own locks (paho calls ``on_publish`` under its message lock).

MQTT 5 first; a broker that answers "unsupported protocol version" gets MQTT
3.1.1 from the next attempt on (:meth:`Link.maintain`, from the executive's tick).
A broker that hangs up on MQTT 5 without saying why needs ``protocol = "3.1.1"``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from raspy.droplog import DropLog
from raspy.errors import RaspyError
from raspy.mqtt.options import BridgeOptions
from raspy.mqtt.outbox import Outbox

log = logging.getLogger(__name__)

#: Seconds between keep-alive pings; the broker sends the last will after 1.5 of these of silence.
KEEPALIVE = 30
#: Back-off between connection attempts, seconds: doubling from the first to the second.
RECONNECT_DELAY = (1, 30)
#: Messages paho holds at once (in flight and waiting for a slot); beyond it the outbox keeps them.
PAHO_QUEUE = 100
#: Commands to external devices waiting to be published; beyond it a command is refused.
COMMAND_QUEUE = 32
#: Bytes a message may take beyond its payload (topic, properties), for MQTT 5's Maximum Packet Size.
OVERHEAD = 4096
#: How many outbox topics are taken at once.
BATCH = 64

#: ``callback(topic, payload, retained)`` for the messages of one subscription.
MessageHandler = Callable[[str, bytes, bool], None]


class NotConnected(RaspyError, RuntimeError):
    """The broker is away: a command cannot be sent now."""


class Link:
    """One connection to the MQTT broker, kept up until :meth:`stop`."""

    def __init__(self, options: BridgeOptions, client_id: str, status_topic: str, outbox: Outbox,
                 drop: DropLog) -> None:
        self.options = options
        self.client_id = client_id
        self.status_topic = status_topic
        self.outbox = outbox
        self.drop = drop
        self.protocol = MQTTProtocolVersion.MQTTv311 if options.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self.connected = threading.Event()
        self.state = "connecting"
        self._noted = ""
        self.connects = 0
        self.losses = 0
        self.published = 0
        self.received = 0
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._commands: deque[tuple[str, bytes]] = deque()
        self._sending = threading.Lock()  # held by the one thread publishing; the others never wait for it
        self._stopping = threading.Event()
        self._fallback = False
        self.client = self._new_client()

    # -- set-up --

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call ``handler`` for each message on ``topic_filter`` (subscribed at every connection)."""
        self._handlers.append((topic_filter, handler))
        self.client.message_callback_add(topic_filter, self._deliver(handler))

    def _new_client(self) -> mqtt.Client:
        v5 = self.protocol == MQTTProtocolVersion.MQTTv5
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol,
                             clean_session=None if v5 else True)
        client.suppress_exceptions = True  # a bug in a handler is logged by the handler's wrapper, never fatal
        if self.options.username:
            client.username_pw_set(self.options.username, self.options.login_password())
        if self.options.tls:
            client.tls_set(ca_certs=_path(self.options.ca), certfile=_path(self.options.cert),
                           keyfile=_path(self.options.key))
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.max_queued_messages_set(PAHO_QUEUE)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda *args: self.wake()  # a PUBACK: paho has room again
        client.on_message = lambda client, userdata, message: self.drop("a message on no subscribed topic")
        for topic_filter, handler in self._handlers:
            client.message_callback_add(topic_filter, self._deliver(handler))
        return client

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        self._connect()

    def _connect(self) -> None:
        properties = None
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            properties.MaximumPacketSize = self.options.max_payload + OVERHEAD  # larger ones never reach us
        self.client.connect_async(self.options.host, self.options.port, keepalive=KEEPALIVE,
                                  clean_start=True if self.protocol == MQTTProtocolVersion.MQTTv5 else
                                  mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        self.client.loop_start()

    def maintain(self) -> None:
        """Periodic care from a thread other than paho's: the switch to MQTT 3.1.1 when the broker asked for it."""
        if not self._fallback:
            return
        self._fallback = False
        log.warning("the MQTT broker at %s does not speak MQTT 5: using MQTT 3.1.1", self.options.url)
        self.client.loop_stop()
        self.client.disconnect()
        self.protocol = MQTTProtocolVersion.MQTTv311
        self.client = self._new_client()
        self._connect()

    def stop(self, timeout: float = 2.0) -> None:
        """Say ``offline`` (retained) when connected, disconnect, and stop both threads."""
        self._stopping.set()
        with self._sending:  # whoever publishes is done
            pass
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass  # gone meanwhile: the last will says it
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho's callbacks (its network thread) --

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            if reason.value == 132 or str(reason) == "Unsupported protocol version":
                if self.protocol == MQTTProtocolVersion.MQTTv5 and self.options.protocol == "auto":
                    self._fallback = True
            self._note(f"refused by {self.options.url}: {reason}")
            return
        version = "MQTT 5" if self.protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1"
        self.connects += 1
        self._note(f"connected to {self.options.url} ({version})")
        filters = [topic_filter for topic_filter, _ in self._handlers]
        if filters:
            if self.protocol == MQTTProtocolVersion.MQTTv5:
                client.subscribe([(f, SubscribeOptions(qos=1, noLocal=True)) for f in filters])
            else:
                client.subscribe([(f, 1) for f in filters])
        self.outbox.resend_all()
        self.connected.set()
        self.wake()

    def _on_connect_fail(self, client: mqtt.Client, userdata) -> None:
        self._note(f"cannot reach {self.options.url}")

    def _on_disconnect(self, client: mqtt.Client, userdata, flags, reason, properties) -> None:
        if not self.connected.is_set():
            return  # the end of an attempt that failed: its reason is noted already
        self.losses += 1
        if not self._stopping.is_set():  # the state first: who sees the link down sees why
            self._note(f"disconnected from {self.options.url}: {reason}")
        self.connected.clear()

    def _note(self, state: str) -> None:
        """A new connection state: logged once per change, not once per attempt."""
        if state == self._noted:
            return
        self._noted = state
        up = state.startswith("connected")
        (log.info if up else log.warning)("MQTT: %s", state)
        self.state = state if up else f"{state} (since {time.strftime('%Y-%m-%d %H:%M:%S')})"

    def _deliver(self, handler: MessageHandler):
        def on_message(client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
            self.received += 1
            if len(message.payload) > self.options.max_payload:
                self.drop(f"a message of {len(message.payload)} bytes on {message.topic} "
                          f"(max_payload {self.options.max_payload})")
                return
            try:
                handler(message.topic, message.payload, bool(message.retain))
            except Exception:
                log.exception("MQTT message on %s not handled", message.topic)

        return on_message

    # -- publishing (one thread at a time calls paho's publish) --

    def command(self, topic: str, payload: bytes) -> None:
        """Send a (not retained) command now; :class:`NotConnected` when the broker is away or the queue full."""
        if not self.connected.is_set():
            raise NotConnected(f"not connected to the MQTT broker ({self.state})")
        if len(self._commands) >= COMMAND_QUEUE:
            raise NotConnected(f"{COMMAND_QUEUE} commands wait for the MQTT broker already")
        self._commands.append((topic, payload))
        self.wake()

    def wake(self) -> None:
        """Something changed: send what is pending now, from this thread, unless another one is sending.

        The thread that sends looks again once it lets go, so nothing is left behind; it stops
        when the broker is away or paho's queue is full (the next PUBACK calls this again).
        """
        while self.connected.is_set() and not self._stopping.is_set() and (self._commands or self.outbox.pending):
            if not self._sending.acquire(blocking=False):
                return
            try:
                stalled = not self._send_pending()
            except Exception:
                log.exception("MQTT publishing failed; going on")
                stalled = True
            finally:
                self._sending.release()
            if stalled:
                return

    def _send_pending(self) -> bool:
        """Send what is pending; False when paho's queue is full or the broker went away."""
        while self.connected.is_set():
            if self._commands:
                topic, payload = self._commands[0]
                if not self._publish(topic, payload, retain=False):
                    return False
                self._commands.popleft()
                continue
            batch = self.outbox.take(BATCH)
            if not batch:
                return True
            for index, (topic, payload) in enumerate(batch):
                if not self._publish(topic, payload, retain=True):
                    self.outbox.retry([topic for topic, _ in batch[index:]])
                    return False
                self.outbox.sent(topic, payload)
        return False

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.published += 1
            return True
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            return True  # paho holds it (bounded) for the reconnection, which sends everything again anyway
        return False  # MQTT_ERR_QUEUE_SIZE: paho is full


def _path(value) -> str | None:
    return None if value is None else str(value)
