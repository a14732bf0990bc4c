"""End-to-end broker throughput: the compiled core, the twin, a bare ``zmq.proxy`` and a minimal forwarder, in one run.

The broker runs in its own process, with C client processes and W echo-worker
processes around it. In ``raw`` mode clients and workers are a few lines of
pyzmq speaking the wire protocol (so the figure is the broker's); in
``raspy`` mode they are RasPy's ``MajorDomoClient.send_many`` and
``MajorDomoWorker`` (what users get). Every reply is checked against its
request. The bare proxy is the ceiling (no protocol, requests pile up at
workers); the minimal forwarder is the floor for any broker in Python (MDP
routing in idiomatic pyzmq and nothing else). ``curve`` is the compiled broker as a CURVE house's
hub runs it (CURVE server, ZAP authenticator, READY authorised by host), with raw clients and
workers holding allowed keys: its ratios to the plain compiled broker are CURVE's cost. Reported per broker: requests/s, p50/p99 latency (one in flight),
the broker process's CPU time per request (``/proc/<pid>/stat``) and the
ratios to the bare proxy measured in the same run; medians over ``--repeat``
runs.

    python -m bench.throughput --out bench/results [--smoke] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
MDPC, MDPW = b"MDPC01", b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT = b"\x01", b"\x02", b"\x03", b"\x04"
PROBE = b"probe"
BROKERS = ("proxy", "forwarder", "compiled", "curve", "pure")
REPLY_TIMEOUT = 5.0  # seconds without any reply before the rest count as lost
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    workers: int
    window: int
    size: int
    requests: int  # per client

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size >= 1024 else f"{self.size} B"
        return f"{self.clients}x{self.workers}x{self.window}, {size}"


def scenarios(smoke: bool) -> list[Scenario]:
    if smoke:
        return [Scenario("latency", 1, 1, 1, 64, 30), Scenario("throughput", 4, 2, 16, 64, 100),
                Scenario("large", 2, 2, 16, 65536, 30)]
    return [Scenario("latency", 1, 1, 1, 64, 3000), Scenario("throughput", 4, 2, 16, 64, 10000),
            Scenario("large", 2, 2, 16, 65536, 1500)]


@dataclass
class Result:
    mode: str
    scenario: str
    broker: str
    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    mismatches: int = 0
    lost: int = 0
    latencies_us: list[float] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_seconds / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_us:
            return None
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (libzmq's I/O thread included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def compiled_core() -> bool:
    try:
        import raspy.mdp._fast.core  # noqa: F401
    except ImportError:
        print("compiled core not built: measuring the twin and the proxy only", file=sys.stderr)
        return False
    return True


# -- the processes -------------------------------------------------------------

def run_proxy(front: str, back: str) -> None:
    """The ceiling: libzmq's proxy between a ROUTER for clients and a DEALER for workers."""
    ctx = zmq.Context()
    frontend, backend = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    frontend.bind(front)
    backend.bind(back)
    zmq.proxy(frontend, backend)


def run_forwarder(endpoint: str) -> None:
    """The floor for a broker in Python: MDP routing on one ROUTER, idiomatic pyzmq, nothing else.

    No heartbeats, no checks, no MMI beyond a count of idle workers: any real
    Python broker (the twin, the Guide's) does at least this per request.
    """
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    idle: deque = deque()
    queue: deque = deque()
    service_of: dict[bytes, bytes] = {}
    while True:
        frames = sock.recv_multipart()
        if frames[2] == MDPC:
            if frames[3] == b"mmi.workers":
                sock.send_multipart([frames[0], b"", MDPC, frames[3], b"%d" % len(idle)])
                continue
            queue.append(frames)
        elif frames[3] == REPLY:
            sock.send_multipart([frames[4], b"", MDPC, service_of[frames[0]], *frames[6:]])
            idle.append(frames[0])
        elif frames[3] == READY:
            service_of[frames[0]] = frames[4]
            idle.append(frames[0])
        while idle and queue:
            request = queue.popleft()
            sock.send_multipart([idle.popleft(), b"", MDPW, REQUEST, request[0], b"", *request[4:]])


def run_curve_broker(endpoint: str, state_dir: str) -> None:
    """The compiled broker as a CURVE hub runs it: keys of ``state_dir``, its allow-list, READY and
    requests for ``hub.config.*`` authorised."""
    from raspy.curve import Authenticator, Curve
    from raspy.house.trust import Trust
    from raspy.mdp.broker import Broker

    curve = Curve.load(Path(state_dir), "hub")
    Authenticator(curve).start()
    trust = Trust("hub")
    Broker(endpoint, curve=curve, authorize=trust.may_serve, may_call=trust.may_call, private=trust.private).run()


def context_for(keys: tuple[str, str, str] | None) -> zmq.Context:
    """A context whose sockets are CURVE clients with ``(public, secret, server)`` keys; plain without."""
    ctx = zmq.Context()
    if keys is not None:
        ctx.curve_publickey, ctx.curve_secretkey, ctx.curve_serverkey = (k.encode() for k in keys)
    return ctx


def raw_worker(endpoint: str, service: bytes, mdp: bool, name: bytes, keys: tuple | None = None) -> None:
    """An echo worker in a few lines: MDP over DEALER, or a DEALER behind the proxy."""
    sock = context_for(keys).socket(zmq.DEALER)
    sock.connect(endpoint)
    if mdp:
        sock.send_multipart([b"", MDPW, READY, service])
    next_beat = time.monotonic() + 1.0
    while True:
        if sock.poll(1000):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if mdp:
                    if frames[2].bytes == REQUEST:
                        frames[2] = REPLY
                        sock.send_multipart(frames, copy=False)
                elif frames[2].bytes == PROBE:
                    sock.send_multipart([frames[0], b"", PROBE, name])
                else:
                    sock.send_multipart(frames, copy=False)
        if mdp and time.monotonic() > next_beat:
            sock.send_multipart([b"", MDPW, HEARTBEAT])
            next_beat = time.monotonic() + 1.0


def raw_client(endpoint: str, service: bytes, mdp: bool, index: int, sc: Scenario, go, out,
               keys: tuple | None = None) -> None:
    """Keeps ``window`` requests in flight on one DEALER; checks every reply against its request."""
    sock = context_for(keys).socket(zmq.DEALER)
    sock.connect(endpoint)
    head = [b"", MDPC, service] if mdp else [b""]
    payload = os.urandom(sc.size)
    tag = struct.Struct("!II")
    copy = sc.size < 8192
    sock.send_multipart([*head, tag.pack(index, 1 << 31), payload])  # connected and served once
    sock.recv_multipart()
    out.put(("ready", index))
    go.wait()
    sent = done = mismatches = 0
    started: dict[int, int] = {}
    latencies = []
    t0 = time.monotonic()
    while done + mismatches < sc.requests:
        while len(started) < sc.window and sent < sc.requests:
            started[sent] = time.perf_counter_ns()
            sock.send_multipart([*head, tag.pack(index, sent), payload], copy=copy)
            sent += 1
        if not sock.poll(REPLY_TIMEOUT * 1000):
            break
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            body = frames[len(head):]
            who, seq = tag.unpack(body[0]) if len(body[0]) == tag.size else (-1, -1)
            t = started.pop(seq, None) if who == index else None
            if t is None or frames[:len(head)] != head or body[1:] != [payload]:
                mismatches += 1
                continue
            done += 1
            if sc.window == 1:
                latencies.append((time.perf_counter_ns() - t) / 1000)
    out.put(("done", index, t0, time.monotonic(), done, mismatches, sc.requests - done - mismatches, latencies))


def raspy_client(endpoint: str, service: bytes, mdp: bool, index: int, sc: Scenario, go, out) -> None:
    """The same load through RasPy's own client (send for one in flight, else send_many)."""
    from raspy.errors import RequestTimeout
    from raspy.mdp.client import MajorDomoClient

    payload = os.urandom(sc.size)
    bodies = [[struct.pack("!II", index, i), payload] for i in range(sc.requests)]
    with MajorDomoClient(endpoint, timeout=REPLY_TIMEOUT, retries=1) as client:
        client.send(service, [b"warm-up"])
        out.put(("ready", index))
        go.wait()
        t0 = time.monotonic()
        latencies = []
        replies: list = []
        try:
            if sc.window == 1:
                for body in bodies:
                    t = time.perf_counter_ns()
                    replies.append(client.send(service, body))
                    latencies.append((time.perf_counter_ns() - t) / 1000)
            else:
                replies = client.send_many(service, bodies, window=sc.window)
        except RequestTimeout:
            pass
        t1 = time.monotonic()
    done = sum(r == b for r, b in zip(replies, bodies))
    out.put(("done", index, t0, t1, done, len(replies) - done, sc.requests - len(replies), latencies))


# -- one measurement -------------------------------------------------------------

class Run:
    """One broker with its workers and clients for one scenario; always cleaned up."""

    def __init__(self, mode: str, broker: str, sc: Scenario, hub: "Keys | None" = None) -> None:
        self.mode, self.broker, self.sc = mode, broker, sc
        self.hub = hub
        self.keys = hub.client if hub is not None and broker == "curve" else None
        self.ctx = mp.get_context("forkserver")  # a clean process, started in milliseconds
        self.procs: list = []
        self.popen: subprocess.Popen | None = None
        self.service = f"bench.{sc.name}".encode()

    def start_broker(self) -> tuple[int, str, str]:
        """The broker's pid, the clients' endpoint and the workers' endpoint."""
        front = free_endpoint()
        if self.broker == "proxy":
            back = free_endpoint()
            proc = self.ctx.Process(target=run_proxy, args=(front, back), daemon=True)
            proc.start()
            self.procs.append(proc)
            return proc.pid, front, back
        if self.broker == "curve":
            proc = self.ctx.Process(target=run_curve_broker, args=(front, self.hub.state_dir), daemon=True)
            proc.start()
            self.procs.append(proc)
            return proc.pid, front, front
        if self.broker == "forwarder":
            proc = self.ctx.Process(target=run_forwarder, args=(front,), daemon=True)
            proc.start()
            self.procs.append(proc)
            return proc.pid, front, front
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("RASPY_PURE", None)
        if self.broker == "pure":
            env["RASPY_PURE"] = "1"
        self.popen = subprocess.Popen([sys.executable, "-m", "raspy", "run", "broker", "--bind", front], env=env)
        return self.popen.pid, front, front

    def start_workers(self, endpoint: str) -> None:
        mdp = self.broker != "proxy"
        for i in range(self.sc.workers):
            if self.mode == "raspy":
                env = dict(os.environ, PYTHONPATH=str(ROOT))
                proc = subprocess.Popen([sys.executable, "-m", "raspy", "run", "echo", "--broker", endpoint,
                                         "--service", self.service.decode()], env=env)
                self.procs.append(proc)
            else:
                name = b"w%d" % i
                proc = self.ctx.Process(target=raw_worker, args=(endpoint, self.service, mdp, name, self.keys),
                                        daemon=True)
                proc.start()
                self.procs.append(proc)

    def wait_for_workers(self, endpoint: str) -> None:
        """All W workers can be given work: counted by mmi.workers, or seen answering via the proxy."""
        sock = context_for(self.keys).socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        seen: set = set()
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                if self.broker == "proxy":
                    sock.send_multipart([b"", PROBE])
                    if sock.poll(200):
                        seen.add(sock.recv_multipart()[-1])
                        if len(seen) == self.sc.workers:
                            return
                else:
                    sock.send_multipart([b"", MDPC, b"mmi.workers", b""])  # 7/MDP: a body frame at least
                    if sock.poll(500):
                        body = sock.recv_multipart()[3:]
                        if self.broker == "forwarder":
                            if int(body[0]) == self.sc.workers:
                                return
                        else:
                            from raspy.mdp import protocol as p
                            status, info = p.parse_reply(body)
                            if info.get(self.service.decode(), {}).get("workers") == self.sc.workers:
                                return
                    time.sleep(0.02)  # polling interval, not a wait for something
            raise RuntimeError(f"{self.broker}: workers not ready")
        finally:
            sock.close()

    def measure(self) -> Result:
        result = Result(self.mode, self.sc.name, self.broker)
        try:
            pid, front, back = self.start_broker()
            self.start_workers(back)
            self.wait_for_workers(front)
            go, out = self.ctx.Event(), self.ctx.Queue()
            target = raspy_client if self.mode == "raspy" else raw_client
            for i in range(self.sc.clients):
                extra = (self.keys,) if self.mode == "raw" else ()
                proc = self.ctx.Process(target=target, args=(front, self.service, self.broker != "proxy", i,
                                                             self.sc, go, out, *extra), daemon=True)
                proc.start()
                self.procs.append(proc)
            for _ in range(self.sc.clients):
                out.get(timeout=30)
            cpu0 = cpu_seconds(pid)
            go.set()
            reports = [out.get(timeout=REPLY_TIMEOUT + 120) for _ in range(self.sc.clients)]
            result.cpu_seconds = cpu_seconds(pid) - cpu0
        finally:
            self.stop()
        result.seconds = max(r[3] for r in reports) - min(r[2] for r in reports)
        result.requests = sum(r[4] for r in reports)
        result.mismatches = sum(r[5] for r in reports)
        result.lost = sum(r[6] for r in reports)
        result.latencies_us = [t for r in reports for t in r[7]]
        return result

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        for proc in self.procs:
            proc.join(timeout=10) if hasattr(proc, "join") else proc.wait(timeout=10)


@dataclass(frozen=True)
class Keys:
    """The CURVE broker's state directory (its key pair and allow-list) and the clients' allowed keys."""

    state_dir: str
    client: tuple[str, str, str]  # public, secret, the broker's public

    @classmethod
    def make(cls, folder: Path) -> "Keys":
        from raspy.curve import ALLOWED_FILE, AllowList, init_keys, key_dir

        hub = init_keys(folder)[0]
        public, secret = (k.decode() for k in zmq.curve_keypair())
        AllowList(key_dir(folder) / ALLOWED_FILE).allow("bench", public)  # bench.* services are its own
        return cls(str(folder), (public, secret, hub.public))


# -- the report ----------------------------------------------------------------------

def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[list[Result]]) -> list[dict]:
    """Medians per (mode, scenario, broker), ratios to the proxy taken within each run."""
    rows = []
    keys = [(r.mode, r.scenario, r.broker) for r in runs[0]]
    for mode, scenario, broker in keys:
        same = [next(r for r in run if (r.mode, r.scenario, r.broker) == (mode, scenario, broker)) for run in runs]
        ceilings = [next(r for r in run if (r.mode, r.scenario, r.broker) == ("raw", scenario, "proxy")) for run in runs]
        twins = [next((r for r in run if (r.mode, r.scenario, r.broker) == (mode, scenario, "pure")), None) for run in runs]
        floors = [next((r for r in run if (r.mode, r.scenario, r.broker) == ("raw", scenario, "forwarder")), None)
                  for run in runs]
        plains = [next((r for r in run if (r.mode, r.scenario, r.broker) == ("raw", scenario, "compiled")), None)
                  for run in runs]

        def ratio(f, others):
            return median([f(a) / f(b) if b is not None and f(b) else None for a, b in zip(same, others)])

        rows.append({
            "mode": mode, "scenario": scenario, "broker": broker, "runs": len(same),
            "rps": median([r.rps for r in same]),
            "p50_us": median([r.percentile(0.5) for r in same]),
            "p99_us": median([r.percentile(0.99) for r in same]),
            "cpu_us": median([r.cpu_us for r in same]),
            "rps_vs_proxy": ratio(lambda r: r.rps, ceilings),
            "cpu_vs_proxy": ratio(lambda r: r.cpu_us, ceilings),
            "p50_vs_proxy": ratio(lambda r: r.percentile(0.5), ceilings),
            "rps_vs_twin": ratio(lambda r: r.rps, twins),
            "cpu_vs_forwarder": ratio(lambda r: r.cpu_us, floors),
            "p50_vs_plain": ratio(lambda r: r.percentile(0.5), plains),
            "cpu_vs_plain": ratio(lambda r: r.cpu_us, plains),
            "mismatches": sum(r.mismatches for r in same),
            "lost": sum(r.lost for r in same),
        })
    return rows


def targets(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The issue's targets, read off the medians."""
    def get(scenario: str, broker: str, key: str) -> float | None:
        return next((r[key] for r in rows if (r["mode"], r["scenario"], r["broker"]) == ("raw", scenario, broker)), None)

    checks = [
        ("CPU/request 4x2x16 64 B: compiled <= 1.5x proxy", get("throughput", "compiled", "cpu_vs_proxy"), 1.5, "le"),
        ("CPU/request 4x2x16 64 B: twin <= 90 us", get("throughput", "pure", "cpu_us"), 90.0, "le"),
        ("CPU/request 4x2x16 64 B: twin <= 1.0x a minimal Python forwarder (same run)",
         get("throughput", "pure", "cpu_vs_forwarder"), 1.0, "le"),
        ("req/s 4x2x16 64 B: compiled >= 2.5x twin", get("throughput", "compiled", "rps_vs_twin"), 2.5, "ge"),
        ("req/s 4x2x16 64 B: compiled >= 0.4x proxy", get("throughput", "compiled", "rps_vs_proxy"), 0.4, "ge"),
        ("p50 latency 1x1x1: compiled <= 1.1x proxy", get("latency", "compiled", "p50_vs_proxy"), 1.1, "le"),
        ("CPU/request 2x2x16 64 KiB: compiled <= 1.3x proxy", get("large", "compiled", "cpu_vs_proxy"), 1.3, "le"),
        ("p50 latency 1x1x1: CURVE <= 1.2x plain (compiled)", get("latency", "curve", "p50_vs_plain"), 1.2, "le"),
        ("CPU/request 4x2x16 64 B: CURVE vs plain (compiled), reported", get("throughput", "curve", "cpu_vs_plain"),
         math.inf, "le"),
    ]
    return [(name, f"{value:.2f}" if value is not None else "-",
             value is not None and (value <= limit if op == "le" else value >= limit))
            for name, value, limit, op in checks]


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version()}


def markdown(rows: list[dict], info: dict, labels: dict, command: str) -> str:
    def num(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)

    lines = [
        f"Machine: {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}, pyzmq {info['pyzmq']} "
        f"(libzmq {info['libzmq']}). Medians of {rows[0]['runs']} runs: `{command}`",
        "",
        "| mode | scenario | broker | req/s | p50 us | p99 us | broker CPU us/req | req/s vs proxy "
        "| CPU vs proxy | p50 vs proxy | mismatches | lost |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {labels[r['scenario']]} | {r['broker']} | {num(r['rps'])} | {num(r['p50_us'])} "
            f"| {num(r['p99_us'])} | {num(r['cpu_us'], '{:.1f}')} | {num(r['rps_vs_proxy'], '{:.2f}')} "
            f"| {num(r['cpu_vs_proxy'], '{:.2f}')} | {num(r['p50_vs_proxy'], '{:.2f}')} | {r['mismatches']} | {r['lost']} |")
    lines += ["", "| target | median | reached |", "|---|--:|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'no'} |" for name, value, ok in targets(rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one run: checks, not figures")
    parser.add_argument("--repeat", type=int, help="runs to take medians over (default 3, 1 with --smoke)")
    parser.add_argument("--mode", choices=["raw", "raspy", "both"], default="both")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in scenarios(False)],
                        help="measure only this scenario (repeatable; default all)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.smoke else 3)
    mp.set_forkserver_preload([__name__ if __name__ != "__main__" else "bench.throughput"])
    modes = ["raw", "raspy"] if args.mode == "both" else [args.mode]
    if "raw" not in modes:
        modes.insert(0, "raw")  # the proxy ceiling is measured in raw mode
    scs = [s for s in scenarios(args.smoke) if not args.scenario or s.name in args.scenario]
    brokers = [b for b in BROKERS if b not in ("compiled", "curve") or compiled_core()]
    hub = Keys.make(Path(tempfile.mkdtemp(prefix="raspy-bench-curve-"))) if "curve" in brokers else None
    runs = []
    for n in range(repeat):
        run = []
        for sc in scs:
            for mode in modes:
                for broker in brokers:
                    if mode == "raspy" and broker in ("proxy", "forwarder", "curve"):
                        continue
                    result = Run(mode, broker, sc, hub).measure()
                    print(f"run {n + 1}/{repeat} {mode:5} {sc.label:18} {broker:8} {result.rps:8.0f} req/s "
                          f"{result.cpu_us:6.1f} us CPU/req  p50 {result.percentile(0.5) or 0:6.0f} us  "
                          f"mismatches {result.mismatches} lost {result.lost}", file=sys.stderr)
                    run.append(result)
        runs.append(run)
    if hub is not None:
        shutil.rmtree(hub.state_dir)
    rows = summarise(runs)
    info = machine()
    command = "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "smoke" if args.smoke else "latest"
    (args.out / f"{stem}.json").write_text(json.dumps({
        "machine": info, "command": command, "scenarios": [asdict(s) for s in scs], "summary": rows,
        "runs": [[{**asdict(r), "latencies_us": None, "rps": r.rps, "cpu_us": r.cpu_us,
                   "p50_us": r.percentile(0.5), "p99_us": r.percentile(0.99)} for r in run] for run in runs],
    }, indent=1))
    table = markdown(rows, info, {s.name: s.label for s in scs}, command)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    return 1 if any(r["mismatches"] or r["lost"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
