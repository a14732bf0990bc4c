"""The status page and its JSON API: a Bottle app over injected data sources.

The app only formats; where the data comes from is a :class:`Sources` object
(the board, the broker's MMI and the key/value map in production, fakes in
tests). Every route is read-only except the restart action, which exists only
when a token is configured and checks it on every call. What the page shows is
taken once per tick and each view of it rendered once (:class:`Views`), so a
crowd costs what one visitor does.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import bottle

from raspy.errors import RaspyError
from raspy.house.control import duration as compact_duration
from raspy.web import metrics

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class Unavailable(RaspyError):
    """A source cannot answer now (no board, no supervisor to restart with)."""


class Sources(Protocol):
    """Where the page's data comes from; each method answers at once (no broker round-trip).

    Shapes are those of the JSON API (see docs/web.md).
    """

    hostname: str

    def executives(self) -> list[dict[str, Any]]:
        """Every executive on the board; :class:`Unavailable` when there is no board."""

    def services(self) -> dict[str, Any]:
        """``{"broker": {up, age, error}, "services": [{name, workers, idle, queued}]}``."""

    def devices(self) -> list[dict[str, Any]]: ...

    def events(self) -> list[dict[str, Any]]: ...

    def host(self) -> dict[str, Any]: ...

    def restart(self, name: str) -> str:
        """Ask the supervisor to restart ``name``; ``KeyError`` if unknown, :class:`Unavailable` if it cannot."""


def snapshot(sources: Sources) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready dict (``/api/status``)."""
    try:
        executives, board = sources.executives(), {"ok": True, "error": None}
    except Unavailable as exc:
        executives, board = [], {"ok": False, "error": str(exc)}
    services = sources.services()
    not_ready = [ex["name"] for ex in executives if not ex["ready"]]
    return {
        "hostname": sources.hostname,
        "time": time.time(),
        "ready": board["ok"] and not not_ready,
        "not_ready": not_ready,
        "board": board,
        "executives": executives,
        "broker": services["broker"],
        "services": services["services"],
        "devices": sources.devices(),
        "events": sources.events(),
        "host": sources.host(),
    }


# -- formatting helpers for the templates ----------------------------------------

def duration(seconds: float | None) -> str:
    """As ``raspy status`` writes it (``42s``, ``5m07s``); an en dash when unknown."""
    return "–" if seconds is None else compact_duration(seconds)


def size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def reading(value: Any) -> str:
    """A device value as a person reads it: floats to at most two decimals."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if value is None:
        return "–"
    return value if isinstance(value, str) else json.dumps(value)


def sparkline(values: Sequence[float], width: int = 96, height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (empty below two points)."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="recent values {low:g} to {high:g}"><title>{low:g} – {high:g}</title>'
            f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>')


HELPERS = {"duration": duration, "size": size, "reading": reading, "sparkline": sparkline, "time": time}


# -- the app ---------------------------------------------------------------------

class Views:
    """The house's state, taken at most once per ``tick`` seconds, and each view of it rendered once.

    The state changes a few times a second at most (the board beats every
    0.5 s), so the first request of a tick takes and renders it while the
    others wait for it, then every request of the tick shares the same bytes.
    A view already rendered in this tick is read without the lock.
    """

    def __init__(self, take: Callable[[], dict[str, Any]], tick: float) -> None:
        self._take = take
        self._tick = tick
        self._lock = threading.Lock()
        #: (when taken, the state, its views rendered so far): replaced whole, so read without the lock
        self._current: tuple[float, dict[str, Any], dict[str, bytes]] = (-math.inf, {}, {})

    def get(self, view: str, render: Callable[[dict[str, Any]], str]) -> bytes:
        """``render(state)`` as UTF-8, made once per tick for each ``view``."""
        taken, _, views = self._current
        body = views.get(view)
        if body is not None and time.monotonic() - taken < self._tick:
            return body
        with self._lock:
            now = time.monotonic()
            if now - self._current[0] >= self._tick:
                self._current = (now, self._take(), {})
            _, state, views = self._current
            body = views.get(view)
            if body is None:
                body = views[view] = render(state).encode()
            return body


def _to_json(data: Any) -> str:
    return json.dumps(data, allow_nan=False, default=str)


def _json(data: Any, status: int = 200) -> str:
    bottle.response.status = status
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    return _to_json(data)


def _token_of(request: bottle.BaseRequest) -> str:
    header = request.get_header("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip()
    return request.forms.getunicode("token") or ""


def make_app(sources: Sources, token: str | None = None, refresh: float = 5.0, tick: float = 0.5) -> bottle.Bottle:
    """The WSGI app. ``token``: the secret a POST must carry; ``None`` or empty turns actions off.

    ``refresh`` is how often (seconds) the page's script refetches its content;
    ``tick`` how long (seconds) one state of the house serves the page, its
    fragment, ``/api/status`` and ``/metrics`` (the board's beat).
    """
    app = bottle.Bottle()
    page = bottle.SimpleTemplate(name="page.tpl", lookup=[str(TEMPLATES)])
    fragment = bottle.SimpleTemplate(name="fragment.tpl", lookup=[str(TEMPLATES)])
    actions = bool(token)
    views = Views(lambda: snapshot(sources), tick)

    def html(template: bottle.SimpleTemplate) -> Callable[[dict[str, Any]], str]:
        return lambda state: template.render(s=state, actions=actions, refresh=refresh, **HELPERS)

    def cached(name: str, render: Callable[[dict[str, Any]], str], content_type: str) -> bytes:
        bottle.response.content_type = content_type
        bottle.response.set_header("Cache-Control", "no-store")
        return views.get(name, render)

    @app.get("/")
    def index() -> bytes:
        return cached("page", html(page), "text/html; charset=utf-8")

    @app.get("/fragment")
    def part() -> bytes:
        return cached("fragment", html(fragment), "text/html; charset=utf-8")

    @app.get("/static/<path:path>")
    def static(path: str) -> bottle.HTTPResponse:
        return bottle.static_file(path, root=str(STATIC))

    @app.get("/api/status")
    def api_status() -> bytes:
        return cached("status", _to_json, "application/json")

    @app.get("/api/services")
    def api_services() -> str:
        return _json(sources.services())

    @app.get("/api/devices")
    def api_devices() -> str:
        return _json({"devices": sources.devices()})

    @app.get("/metrics")
    def metrics_text() -> bytes:
        return cached("metrics", metrics.render, metrics.CONTENT_TYPE)

    @app.get("/healthz")
    def healthz() -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "ok\n"

    @app.get("/readyz")
    def readyz() -> str:
        try:
            executives = sources.executives()
        except Unavailable as exc:
            return _json({"ready": False, "error": str(exc), "not_running": []}, 503)
        down = [{"name": ex["name"], "state": ex["state"]} for ex in executives if not ex["ready"]]
        return _json({"ready": not down, "not_running": down}, 503 if down else 200)

    if actions:
        _add_actions(app, sources, token)

    @app.error(404)
    def not_found(error: bottle.HTTPError) -> str:
        return _json({"error": "not found", "path": bottle.request.path}, 404)

    @app.error(405)
    def not_allowed(error: bottle.HTTPError) -> str:
        return _json({"error": f"{bottle.request.method} is not allowed here"}, 405)

    return app


def _add_actions(app: bottle.Bottle, sources: Sources, token: str) -> None:
    """The POST routes, each checking ``token`` in constant time."""
    expected = token.encode()

    def restart(name: str, then: Callable[[str], str]) -> str:
        given = _token_of(bottle.request).encode()
        if not hmac.compare_digest(given, expected):
            log.warning("refused a restart of %r from %s: bad token", name, bottle.request.remote_addr)
            return _json({"error": "a valid token is required"}, 403)
        try:
            detail = sources.restart(name)
        except KeyError:
            return _json({"error": f"no executive {name!r}"}, 404)
        except Unavailable as exc:
            return _json({"error": str(exc)}, 503)
        log.info("restart of %r asked from %s", name, bottle.request.remote_addr)
        return then(detail)

    @app.post("/api/executives/<name>/restart")
    def api_restart(name: str) -> str:
        return restart(name, lambda detail: _json({"restarted": name, "detail": detail}))

    @app.post("/restart")
    def form_restart() -> str:
        name = bottle.request.forms.getunicode("name") or ""

        def back(detail: str) -> str:
            bottle.redirect("./", 303)
            return ""
        return restart(name, back)
