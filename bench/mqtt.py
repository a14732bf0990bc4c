"""Readings from the key/value map to MQTT through the bridge, against publishing them to Mosquitto directly.

    PYTHONPATH=. python bench/mqtt.py [--readings 20000] [--devices 20] [--paced 300] [--rounds 3]

One Mosquitto, one RasPy broker, one key/value server and the ``mqtt``
executive, all real processes. A paho client subscribed to the state topics
times what arrives. Three ways to get the same readings there, in one run:

- ``bridge``: ``KvPublisherClient`` sends ``/device/bench.fake.d<k>`` readings; the
  bridge publishes each one's state and attributes (retained, QoS 1).
- ``paho``: a paho client publishes the same two payloads per reading straight to
  Mosquitto (retained, QoS 1, the bridge's settings): the reference.
- ``mosquitto_pub``: ``mosquitto_pub -l`` (C) does the same from its standard input,
  one process for the states and one for the attributes (throughput only).

Throughput: ``--readings`` sent as fast as the sender goes, over ``--devices``
devices; done when the subscriber has seen every device's last value. The
bridge keeps only the latest value per topic, so under overload it sends fewer
messages than readings ("delivered"); the direct senders deliver every one.
Latency: ``--paced`` readings 10 ms apart, each carrying its send time
(``time.monotonic()``, shared by the processes of one machine); p50 and p99 of
the time until the subscriber has it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Mosquitto  # noqa: E402
from support import Children, broker_up, free_endpoint, live, wait_for, write_config  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from raspy.mdp import protocol  # noqa: E402
from raspy.state.kv.client import KvPublisherClient  # noqa: E402

HOST = "bench"


class Subscriber:
    """Records, per state topic, the arrival time of each payload."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, list[tuple[float, bytes]]] = {}
        self.lock = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe([("raspy/bench/+/state", 0), ("direct/+/+/state", 0)])
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        with self.lock:
            self.seen.setdefault(message.topic, []).append((now, message.payload))
            self.lock.notify_all()

    def reset(self) -> None:
        with self.lock:
            self.seen = {}

    def has(self, last: dict[str, bytes]) -> bool:
        with self.lock:
            return self._has(last)

    def _has(self, last: dict[str, bytes]) -> bool:
        return all(self.seen.get(topic, [(0, None)])[-1][1] == payload for topic, payload in last.items())

    def wait(self, last: dict[str, bytes], timeout: float = 30) -> None:
        """Until every topic of ``last`` has shown its payload."""
        with self.lock:
            assert self.lock.wait_for(lambda: self._has(last), timeout), "a reading did not arrive"

    def count(self) -> int:
        with self.lock:
            return sum(map(len, self.seen.values()))


def reading(value: float, at: float) -> bytes:
    return protocol.pack({"value": value, "unit": "C", "timestamp": at, "poll": 1})


def direct_payloads(value: float, at: float) -> tuple[bytes, bytes]:
    """What the bridge publishes for one reading: the state and the attributes."""
    attributes = json.dumps({"value": value, "unit": "C", "timestamp": at}, separators=(",", ":"))
    return json.dumps(value).encode(), attributes.encode()


class Direct:
    """A paho publisher with the bridge's settings, straight to Mosquitto."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-direct", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, device: str, value: float, at: float) -> None:
        state, attributes = direct_payloads(value, at)
        self.client.publish(f"direct/paho/{device}/state", state, qos=1, retain=True)
        self.client.publish(f"direct/paho/{device}/attributes", attributes, qos=1, retain=True)


def throughput(mode: str, args, kv: KvPublisherClient, direct: Direct, sub: Subscriber, port: int) -> dict:
    devices = [f"d{k}" for k in range(args.devices if mode != "mosquitto_pub" else 1)]
    values = [float(i) for i in range(args.readings)]
    last = {}
    for i, value in enumerate(values):
        device = devices[i % len(devices)]
        last[state_topic(mode, device)] = json.dumps(value).encode()
    sub.reset()
    start = time.monotonic()
    if mode == "bridge":
        for i, value in enumerate(values):
            kv.send("/device/", f"{HOST}.fake.{devices[i % len(devices)]}", reading(value, time.time()))
    elif mode == "paho":
        for i, value in enumerate(values):
            direct.send(devices[i % len(devices)], value, time.time())
    else:
        mosquitto_pub(port, args.readings, last)
    wait_for(lambda: sub.has(last), timeout=300, interval=0.005, what=f"{mode}: every device's last value")
    elapsed = time.monotonic() - start
    return {"rate": args.readings / elapsed, "delivered": sub.count()}


def lockstep(mode: str, args, kv: KvPublisherClient, direct: Direct, sub: Subscriber) -> float:
    """Readings per second when each device's next reading waits for its last one to arrive: all delivered."""
    devices = [f"d{k}" for k in range(args.devices)]
    steps = args.readings // len(devices)
    sub.reset()
    start = time.monotonic()
    for step in range(steps):
        value = float(step)
        for device in devices:
            if mode == "bridge":
                kv.send("/device/", f"{HOST}.fake.{device}", reading(value, time.time()))
            else:
                direct.send(device, value, time.time())
        sub.wait({state_topic(mode, device): json.dumps(value).encode() for device in devices})
    return steps * len(devices) / (time.monotonic() - start)


def mosquitto_pub(port: int, readings: int, last: dict[str, bytes]) -> None:
    """Two ``mosquitto_pub -l`` processes, states and attributes of one device, the same payloads."""
    (topic,) = last
    now = time.time()
    lines = [direct_payloads(float(i), now) for i in range(readings)]
    procs = []
    for index, suffix in enumerate(("state", "attributes")):
        procs.append(subprocess.Popen(
            [shutil.which("mosquitto_pub"), "-p", str(port), "-q", "1", "-r", "-l", "-V", "mqttv5",
             "-t", topic.rsplit("/", 1)[0] + f"/{suffix}"], stdin=subprocess.PIPE))
        procs[-1].stdin.write(b"\n".join(line[index] for line in lines) + b"\n")
    for proc in procs:
        proc.stdin.close()
    for proc in procs:
        proc.wait(300)


def state_topic(mode: str, device: str) -> str:
    return f"raspy/{HOST}/{device}/state" if mode == "bridge" else f"direct/{mode}/{device}/state"


def latency(mode: str, args, kv: KvPublisherClient, direct: Direct, sub: Subscriber) -> list[float]:
    """Seconds from send to arrival of the ``args.paced`` readings of one device sent 10 ms apart
    (a reading the bridge replaced by a newer one before sending counts as not arrived)."""
    topic = state_topic(mode, "paced")
    sub.reset()
    for _ in range(args.paced):
        sent = time.monotonic()
        if mode == "bridge":
            kv.send("/device/", f"{HOST}.fake.paced", reading(sent, time.time()))
        else:
            direct.send("paced", sent, time.time())
        time.sleep(0.01)
    sub.wait({topic: json.dumps(sent).encode()})
    with sub.lock:
        return [arrived - float(payload) for arrived, payload in sub.seen[topic]]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def start_house(children: Children, folder: Path, mosquitto: Mosquitto) -> KvPublisherClient:
    broker, snapshot, publisher, collector = (free_endpoint() for _ in range(4))
    config = write_config(folder / "raspy.toml", {
        "hostname": HOST, "state_dir": str(folder / "state"), "broker": broker, "kv_snapshot": snapshot,
        "kv_publisher": publisher, "kv_collector": collector}, {
        "broker": {}, "kv": {"state": str(folder / "kv.state")}, "mqtt": {"url": mosquitto.url}})
    logs = open(folder / "house.log", "ab")
    for name in ("broker", "kv", "mqtt"):
        children.executive(config, name, stdout=logs, stderr=subprocess.STDOUT)
    wait_for(lambda: broker_up(broker) and live(broker, f"{HOST}.mqtt.devices"), timeout=30, what="the house")
    return KvPublisherClient(collector)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        print("mosquitto is not installed (make bench installs it with apt when root)")
        return 0
    children = Children()
    with tempfile.TemporaryDirectory() as folder:
        mosquitto = Mosquitto(Path(folder)).start()
        try:
            kv = start_house(children, Path(folder), mosquitto)
            sub, direct = Subscriber(mosquitto.port), Direct(mosquitto.port)
            warm = {state_topic("bridge", f"d{k}"): b"-1.0" for k in range(args.devices)}
            for k in range(args.devices):  # the bridge knows every device before the clock starts
                kv.send("/device/", f"{HOST}.fake.d{k}", reading(-1.0, time.time()))
            wait_for(lambda: sub.has(warm), timeout=30, what="the bridge's first readings")
            report(args, kv, direct, sub, mosquitto.port)
        finally:
            children.kill_all()
            mosquitto.kill()
    return 0


def report(args, kv: KvPublisherClient, direct: Direct, sub: Subscriber, port: int) -> None:
    modes = ("bridge", "paho", "mosquitto_pub")
    firehose: dict[str, list[dict]] = {mode: [] for mode in modes}
    steps: dict[str, list[float]] = {"bridge": [], "paho": []}
    for _ in range(args.rounds):  # rounds alternate the modes, so load from elsewhere hits them alike
        for mode in modes:
            firehose[mode].append(throughput(mode, args, kv, direct, sub, port))
        for mode in steps:
            steps[mode].append(lockstep(mode, args, kv, direct, sub))
    delays = {mode: latency(mode, args, kv, direct, sub) for mode in ("bridge", "paho")}
    print(f"paced readings that arrived: bridge {len(delays['bridge'])}, paho {len(delays['paho'])} of {args.paced}")
    rows = {
        "firehose: readings/s sent and taken": {m: statistics.median(r["rate"] for r in firehose[m]) for m in modes},
        "firehose: states delivered": {m: statistics.median(r["delivered"] for r in firehose[m]) for m in modes},
        "lockstep: readings/s, all delivered": {m: statistics.median(steps[m]) for m in steps},
        "latency p50, ms": {m: percentile(delays[m], 50) * 1000 for m in delays},
        "latency p99, ms": {m: percentile(delays[m], 99) * 1000 for m in delays},
    }
    print(f"{args.readings} readings over {args.devices} devices (mosquitto_pub: 1), median of {args.rounds} rounds; "
          f"latency: {args.paced} readings 10 ms apart")
    print(f"| figure | {' | '.join(modes)} | bridge / paho |")
    print("|---|" + "--:|" * (len(modes) + 1))
    for name, values in rows.items():
        cells = [f"{values[m]:.2f}" if m in values and values[m] < 100 else f"{values[m]:.0f}" if m in values else "-"
                 for m in modes]
        print(f"| {name} | {' | '.join(cells)} | {values['bridge'] / values['paho']:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
