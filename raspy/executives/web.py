"""The ``web`` executive: the status page and its JSON API, served from the board, MMI and kv."""
from __future__ import annotations

import logging
from pathlib import Path

from raspy.house.board import board_name
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import PORT, POSITIVE, Option
from raspy.web.app import make_app
from raspy.web.house import House, supervisor_restarter
from raspy.web.server import DEFAULT_BIND, DEFAULT_PORT, counted, serve

log = logging.getLogger(__name__)


class Web(Executive):
    """The ``web`` executive: the status page on ``bind``:``port`` (127.0.0.1:8080)."""

    options = (
        Option("bind", str, DEFAULT_BIND, "the address to listen on (`0.0.0.0`: every interface)"),
        Option("port", int, DEFAULT_PORT, "the TCP port (0: any free one)", PORT),
        Option("token", str, None, "enables the restart action, for requests that send it"),
        Option("board", str, None, "shared-memory name of the board; default derived from the state directory"),
        Option("refresh", float, 5.0, "seconds between page updates", POSITIVE),
        Option("mmi_interval", float, 5.0, "seconds between queries of the broker's `mmi.workers`", POSITIVE),
        Option("stale_after", float, 15.0, "seconds without a beat before a running executive counts as hung "
               "(as the supervisor's default `hang_timeout`)", POSITIVE),
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
        self.server = serve(counted(self.app, self.slot), self.option("bind"), self.option("port"))
        self.add_thread(lambda: self.server.serve_forever(0.2), self.server.shutdown, "web-server")

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        host = settings.options.get("bind", DEFAULT_BIND)
        return [f"tcp://{f'[{host}]' if ':' in host else host}:{settings.options.get('port', DEFAULT_PORT)}"]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def run(self) -> None:
        self.house.start()
        log.info("status page on %s", self.url)
        super().run()

    def close(self) -> None:
        super().close()
        self.server.server_close()
        self.house.close()
