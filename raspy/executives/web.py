"""The ``web`` executive: the status page and its JSON API, served from the board, MMI and kv."""
from __future__ import annotations

# imported here, in the supervisor before it forks, rather than by the child: an import after
# the fork costs the executive ~1 MB of its own (the server resolves its host name with idna)
import encodings.idna  # noqa: F401
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from raspy.house.board import board_name
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import PORT, POSITIVE, Option, at_least
from raspy.web.app import make_app
from raspy.web.house import House, supervisor_restarter
from raspy.web.server import DEFAULT_BIND, DEFAULT_PORT, Limits, Server

log = logging.getLogger(__name__)

def counted(app: Callable, slot: Counters) -> Callable:
    """``app`` counting each HTTP request on the board slot (5xx answers as errors)."""
    def wsgi(environ: dict, start_response: Callable) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            slot.count(requests=1, replies=1, errors=int(status[:1] == "5"))
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wsgi


class Web(Executive):
    """The ``web`` executive: the status page on ``bind``:``port`` (127.0.0.1:8080)."""

    options = (
        Option("bind", str, DEFAULT_BIND, "the address to listen on (`0.0.0.0`: every interface)"),
        Option("port", int, DEFAULT_PORT, "the TCP port (0: any free one)", PORT),
        Option("token", str, None, "enables the restart action, for requests that send it"),
        Option("board", str, None, "shared-memory name of the board; default derived from the state directory"),
        Option("refresh", float, 5.0, "seconds between page updates", POSITIVE),
        Option("mmi_interval", float, 5.0, "seconds between queries of the broker's `mmi.workers` while the "
               "page is read", POSITIVE),
        Option("stale_after", float, 15.0, "seconds without a beat before a running executive counts as hung "
               "(as the supervisor's default `hang_timeout`)", POSITIVE),
        # the server's bounds (docs/limits.md, "Web")
        Option("threads", int, Limits.threads, "worker threads running the page", at_least(1)),
        Option("connections", int, Limits.connections,
               "connections held at once; more wait in the listen backlog", at_least(1)),
        Option("idle_timeout", float, Limits.idle_timeout,
               "seconds a connection may hold without a complete request", POSITIVE),
        Option("max_header_bytes", int, Limits.max_header_bytes,
               "bytes of request line and headers, up to the blank line; 431 beyond", at_least(256)),
        Option("max_body_bytes", int, Limits.max_body_bytes,
               "bytes of a request body (the POST routes); 413 beyond, before it is read", at_least(1)),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.house = House(
            settings.hostname, self.option("board") or board_name(settings.state_dir), settings.broker,
            state_dir=settings.state_dir, restarter=supervisor_restarter(Path(settings.state_dir)),
            stale_after=float(self.option("stale_after")),
            mmi_interval=float(self.option("mmi_interval")),
            kv_snapshot=settings.kv_snapshot, kv_publisher=settings.kv_publisher,
        )
        self.app = make_app(self.house, token=self.option("token") or None, refresh=float(self.option("refresh")))
        limits = Limits(**{field.name: self.option(field.name) for field in fields(Limits)})
        self.server = Server(counted(self.app, self.slot), self.option("bind"), self.option("port"), limits)
        self.add_thread(self.server.serve_forever, self.server.stop, "web-server")

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        host = settings.options.get("bind", DEFAULT_BIND)
        return [f"tcp://{f'[{host}]' if ':' in host else host}:{settings.options.get('port', DEFAULT_PORT)}"]

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}/"

    def run(self) -> None:
        self.house.start()
        log.info("status page on %s", self.url)
        super().run()

    def close(self) -> None:
        super().close()
        self.server.close()
        self.house.close()
