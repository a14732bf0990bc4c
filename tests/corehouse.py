"""Real processes around Core for end-to-end tests: broker, key/value server, Titanic, Core."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from support import broker_up, free_endpoint, live, wait_for, write_config

from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.worker import MajorDomoWorker
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient

HOST = "h"
HEARTBEAT = 0.2


class CoreHouse:
    """Endpoints and processes of one test; :meth:`stop` releases the in-test workers."""

    def __init__(self, children, tmp_path: Path) -> None:
        self.children = children
        self.state_dir = tmp_path / "core"
        self.scenarios_dir = self.state_dir / "scenarios"
        self.scenarios_dir.mkdir(parents=True)
        self.tmp_path = tmp_path
        self.broker = free_endpoint()
        self.snapshot, self.publisher, self.collector = free_endpoint(), free_endpoint(), free_endpoint()
        self.core = None
        self.executives: dict[str, dict[str, Any]] = {}  # more [executives.NAME] tables, e.g. fake
        self._workers: list[MajorDomoWorker] = []

    def call(self, service: str, command: str, args: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        with MajorDomoClient(self.broker, timeout=timeout, retries=1) as client:
            return client.call(service, command) if args is None else client.call(service, command, args)

    def live(self, service: str) -> bool:
        return live(self.broker, service)

    def start_broker(self) -> None:
        self.children.raspy("run", "broker", "--bind", self.broker, "--heartbeat", str(HEARTBEAT))
        wait_for(lambda: broker_up(self.broker), what="broker up")

    def config(self, **core_options: Any) -> Path:
        """The house's configuration, with Core's options of this start."""
        return write_config(
            self.tmp_path / "raspy.toml",
            {"hostname": HOST, "state_dir": str(self.state_dir), "broker": self.broker, "kv_snapshot": self.snapshot,
             "kv_publisher": self.publisher, "kv_collector": self.collector, "heartbeat": HEARTBEAT},
            # its copy beside the state file: these tests end with a kill -9, which would leave it in /dev/shm
            {"kv": {"state": str(self.tmp_path / "kv.state"), "ram_copy": str(self.tmp_path / "kv.copy")},
             "titanic": {"db": str(self.tmp_path / "titanic.db")},
             "core": core_options, **self.executives})

    def start_kv(self) -> None:
        self.children.executive(self.config(), "kv")

    def start_titanic(self) -> None:
        self.children.executive(self.config(), "titanic")
        wait_for(lambda: self.live("titanic.store"), what="titanic.store up")

    def start_core(self, **options: Any):
        with open(self.tmp_path / "core.log", "a") as log:
            self.core = self.children.executive(self.config(**options), "core", stderr=log)
        wait_for(lambda: all(self.live(f"{HOST}.core.{s}") for s in ("cron", "scenario", "scenarios")),
                 what="core services up")
        return self.core

    def core_log(self) -> str:
        return (self.tmp_path / "core.log").read_text()

    def subscribe(self, subtree: str, callback: Callable | None = None) -> KvSubscriberClient:
        sub = KvSubscriberClient(subtree, self.snapshot, self.publisher, callback).start()
        assert sub.wait_synced(5), "kv subscriber did not sync"
        return sub

    def kv_publisher(self) -> KvPublisherClient:
        return KvPublisherClient(self.collector)

    def worker(self, service: str, handler: Callable[[p.Frames], p.Frames]) -> MajorDomoWorker:
        """An in-test MDP worker serving ``service`` in a thread."""
        worker = MajorDomoWorker(self.broker, service, handler, heartbeat=HEARTBEAT)
        threading.Thread(target=worker.run, daemon=True).start()
        self._workers.append(worker)
        wait_for(lambda: self.live(service), what=f"{service} up")
        return worker

    def stop(self) -> None:
        for worker in self._workers:
            worker.shutdown()
