"""The ``web`` executive: the status page and its JSON API, served from the board, MMI and kv."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from raspy.house.board import board_name
from raspy.house.executive import Counters, Executive, Settings
from raspy.web.app import make_app
from raspy.web.house import House, supervisor_restarter
from raspy.web.server import DEFAULT_BIND, DEFAULT_PORT, counted, serve

log = logging.getLogger(__name__)


class Web(Executive):
    """The ``web`` executive: the status page on ``bind``:``port`` (127.0.0.1:8080).

    Options: ``bind``, ``port``, ``token`` (enables the restart action), ``board``
    (shared-memory name, derived from the state directory by default), ``refresh`` (seconds between
    page updates), ``mmi_interval`` (seconds between broker queries),
    ``stale_after`` (seconds without a beat before an executive counts as hung;
    15, as the supervisor's default hang timeout).
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.house = House(
            settings.hostname, options.get("board") or board_name(settings.state_dir), settings.broker,
            state_dir=settings.state_dir, restarter=supervisor_restarter(Path(settings.state_dir)),
            stale_after=float(options.get("stale_after", 15.0)),
            mmi_interval=float(options.get("mmi_interval", 5.0)),
            kv_snapshot=settings.kv_snapshot, kv_publisher=settings.kv_publisher,
        )
        self.app = make_app(self.house, token=options.get("token") or None,
                            refresh=float(options.get("refresh", 5.0)))
        self.server = serve(counted(self.app, self.slot), options.get("bind", DEFAULT_BIND),
                            int(options.get("port", DEFAULT_PORT)))
        self.add_thread(lambda: self.server.serve_forever(0.2), self.server.shutdown, "web-server")

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        token = options.get("token")
        if token is not None and not isinstance(token, str):
            raise ValueError(f"token: {token!r} is not a string (write it in quotes)")

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
