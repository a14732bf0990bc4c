"""The ``web`` executive: the status page and its JSON API, served from the board, MMI and kv."""
from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

from raspy.house.board import board_name
from raspy.house.executive import Counters, Executive, Settings
from raspy.web.app import make_app
from raspy.web.house import House, supervisor_restarter
from raspy.web.server import DEFAULT_BIND, DEFAULT_PORT, Limits, Server

log = logging.getLogger(__name__)

#: Every option of ``[executives.web]`` with its default (which also gives its type); any other is refused.
OPTIONS: dict[str, Any] = {
    "bind": DEFAULT_BIND,
    "port": DEFAULT_PORT,
    "token": "",            # enables the restart action
    "board": "",            # shared-memory name; derived from the state directory when empty
    "refresh": 5.0,         # seconds between page updates
    "mmi_interval": 5.0,    # seconds between broker queries
    "stale_after": 15.0,    # seconds without a beat before an executive counts as hung
    **asdict(Limits()),     # the server's bounds (docs/limits.md)
}


def web_options(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over the defaults of :data:`OPTIONS`; ``ValueError`` naming an unknown option or a bad value."""
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"of the web executive; known: {', '.join(OPTIONS)}")
    options = dict(OPTIONS)
    for name, value in given.items():
        default = OPTIONS[name]
        wanted = (int, float) if isinstance(default, float) else type(default)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ValueError(f"option {name!r} of the web executive: {value!r} is not {type(default).__name__}")
        if name == "port" and not 0 <= value <= 65535:
            raise ValueError(f"option 'port' of the web executive: {value} is not a port (0-65535)")
        if name != "port" and not isinstance(default, str) and value <= 0:
            raise ValueError(f"option {name!r} of the web executive: {value!r} must be positive")
        options[name] = value
    return options


def counted(app: Callable, slot: Counters) -> Callable:
    """``app`` counting each HTTP request on the board slot (5xx answers as errors)."""
    def wsgi(environ: dict, start_response: Callable) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            slot.count(requests=1, replies=1, errors=int(status[:1] == "5"))
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wsgi


class Web(Executive):
    """The ``web`` executive: the status page on ``bind``:``port`` (127.0.0.1:8080); options in :data:`OPTIONS`."""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        web_options(options)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        options = web_options(settings.options)
        super().__init__(settings, slot)
        self.house = House(
            settings.hostname, options["board"] or board_name(settings.state_dir), settings.broker,
            state_dir=settings.state_dir, restarter=supervisor_restarter(Path(settings.state_dir)),
            stale_after=float(options["stale_after"]), mmi_interval=float(options["mmi_interval"]),
            kv_snapshot=settings.kv_snapshot, kv_publisher=settings.kv_publisher,
        )
        self.app = make_app(self.house, token=options["token"] or None, refresh=float(options["refresh"]),
                            tick=self.beat_interval)
        limits = Limits(**{f.name: options[f.name] for f in fields(Limits)})
        self.server = Server(counted(self.app, self.slot), options["bind"], options["port"], limits)
        self.add_thread(self.server.serve_forever, self.server.stop, "web-server")

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
