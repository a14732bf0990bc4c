"""Key/value updates per second delivered to N subscribers, against a bare proxy.

One publisher process pushes ``--updates`` updates; ``--subscribers``
subscriber processes each receive all of them. The same run measures two
forwarders between them:

- ``proxy``: the reference, ``zmq.proxy(PULL, PUB)`` in C; subscribers are bare
  SUB loops that check the publisher's counter for gaps;
- ``kv``: ``KvServer`` (sequence, map, state file); subscribers are
  ``KvSubscriberClient`` with the snapshot protocol and gap detection.

The rate is updates / (last subscriber done - first update sent). Rounds
alternate the two so that load from elsewhere hits both alike.

    PYTHONPATH=. python bench/kv_throughput.py [--updates 20000] [--subscribers 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

KEYS = 100
DONE = "/bench/done"
WARM = b"/warm"


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def frames_of(i: int, sequence: int, prefix: bytes) -> list[bytes]:
    """What ``KvPublisherClient.send`` builds, with the publisher's counter as sequence."""
    from raspy.mdp import protocol
    from raspy.state.kv.message import KVMsg
    key = f"/bench/k{i % KEYS}"
    return KVMsg(key, sequence, prefix + sequence.to_bytes(8, "big"), {}, protocol.pack(i)).frames()


def expected_map(updates: int) -> dict[str, bytes]:
    from raspy.mdp import protocol
    last = {f"/bench/k{i % KEYS}": protocol.pack(i) for i in range(updates)}
    last[DONE] = protocol.pack(updates)
    return last


# -- forwarders ---------------------------------------------------------------

def run_proxy(collector: str, publisher: str) -> None:
    import zmq

    from raspy.state.kv.message import HWM
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pull.bind(collector)
    pub.bind(publisher)
    try:
        zmq.proxy(pull, pub)
    except zmq.ContextTerminated:
        pass


def run_kv(endpoints: tuple[str, str, str], state: str, stop: mp.Event) -> None:
    import threading

    from raspy.state.kv.server import KvServer
    server = KvServer(*endpoints, state_path=state)
    threading.Thread(target=lambda: (stop.wait(), server.stop()), daemon=True).start()
    server.run()


# -- subscribers ----------------------------------------------------------------

def proxy_subscriber(publisher: str, updates: int, ready, results) -> None:
    import zmq

    from raspy.state.kv.message import HWM
    sub = zmq.Context().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.subscribe(b"")
    sub.connect(publisher)
    expected, gaps, received = 0, 0, 0
    while received < updates:
        frames = sub.recv_multipart()
        if frames[0] == WARM:
            ready.set()
            continue
        sequence = int.from_bytes(frames[1], "big")
        if sequence != expected + 1:
            gaps += 1
        expected = sequence
        received += 1
    results.put({"done": time.monotonic(), "gaps": gaps, "resyncs": 0, "complete": True})


def kv_subscriber(snapshot: str, publisher: str, updates: int, ready, results) -> None:
    from raspy.mdp import protocol
    from raspy.state.kv.client import KvSubscriberClient
    client = KvSubscriberClient("", snapshot, publisher).start()  # everything: gaps are visible
    client.wait_synced()
    ready.set()
    done = protocol.pack(updates)
    while client.get(DONE) != done:
        time.sleep(0.005)  # the client's thread does the work; polling often would steal the GIL
    finished = time.monotonic()
    complete = client.dict() == expected_map(updates)
    client.stop()
    results.put({"done": finished, "gaps": client.gaps, "resyncs": client.resyncs, "complete": complete})


# -- publisher ------------------------------------------------------------------

def publish(mode: str, collector: str, updates: int, readies: list, results) -> None:
    import zmq

    from raspy.mdp import protocol
    from raspy.state.kv.client import KvPublisherClient
    ctx = zmq.Context()
    if mode == "proxy":
        push = ctx.socket(zmq.PUSH)
        push.connect(collector)
        while not all(ready.is_set() for ready in readies):
            push.send_multipart([WARM, bytes(8), b"", b"", b""])
            time.sleep(0.01)
        prefix = os.urandom(8)
        started = time.monotonic()
        for i in range(updates - 1):
            push.send_multipart(frames_of(i, i + 1, prefix))
        push.send_multipart([DONE.encode(), updates.to_bytes(8, "big"), bytes(16), b"", protocol.pack(updates)])
        push.close(linger=-1)
    else:
        for ready in readies:
            ready.wait()
        client = KvPublisherClient(collector, timeout=30, context=ctx)
        started = time.monotonic()
        for i in range(updates):
            client.send("/bench/", f"k{i % KEYS}", protocol.pack(i))
        client.send("/bench/", "done", protocol.pack(updates))
        client.close()
    results.put({"started": started, "sent": time.monotonic()})


# -- one measurement --------------------------------------------------------------

def measure(mode: str, updates: int, subscribers: int) -> dict:
    snapshot, publisher, collector = free_endpoint(), free_endpoint(), free_endpoint()
    stop = mp.Event()
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "proxy":
            forwarder = mp.Process(target=run_proxy, args=(collector, publisher), daemon=True)
        else:
            forwarder = mp.Process(target=run_kv, args=((snapshot, publisher, collector), str(Path(tmp) / "kv.state"),
                                                        stop), daemon=True)
        forwarder.start()
        readies = [mp.Event() for _ in range(subscribers)]
        results, sent = mp.Queue(), mp.Queue()
        subs = [mp.Process(target=proxy_subscriber if mode == "proxy" else kv_subscriber,
                           args=((publisher,) if mode == "proxy" else (snapshot, publisher)) + (updates, ready, results),
                           daemon=True) for ready in readies]
        for proc in subs:
            proc.start()
        pub = mp.Process(target=publish, args=(mode, collector, updates, readies, sent), daemon=True)
        pub.start()
        timing = sent.get(timeout=300)
        outcome = [results.get(timeout=300) for _ in subs]
        stop.set()
        for proc in subs + [pub]:
            proc.join(10)
        forwarder.terminate()
        forwarder.join(10)
    elapsed = max(r["done"] for r in outcome) - timing["started"]
    return {
        "mode": mode,
        "updates": updates,
        "subscribers": subscribers,
        "seconds": round(elapsed, 3),
        "publish_seconds": round(timing["sent"] - timing["started"], 3),
        "updates_per_s": round(updates / elapsed),
        "deliveries_per_s": round(updates * subscribers / elapsed),
        "gaps": sum(r["gaps"] for r in outcome),
        "resyncs": sum(r["resyncs"] for r in outcome),
        "complete": all(r["complete"] for r in outcome),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for mode in ("proxy", "kv"):
            run = measure(mode, args.updates, args.subscribers)
            print(json.dumps(run))
            runs.append(run)
    median = {mode: statistics.median(r["updates_per_s"] for r in runs if r["mode"] == mode) for mode in ("proxy", "kv")}
    paired = [kv["updates_per_s"] / proxy["updates_per_s"] for proxy, kv in zip(runs[::2], runs[1::2])]
    summary = {"proxy_updates_per_s": median["proxy"], "kv_updates_per_s": median["kv"],
               "ratio": round(median["kv"] / median["proxy"], 2),
               "paired_ratios": [round(r, 2) for r in paired], "median_paired_ratio": round(statistics.median(paired), 2),
               "all_gap_free": all(r["gaps"] == 0 and r["complete"] for r in runs)}
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
