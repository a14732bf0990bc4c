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
import http
import json
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from raspy.standin import stand_in, standing_in

# bottle takes its status lines from http.client, which imports ssl for HTTPS clients (1 MiB and
# libssl in every process of the house): the page serves plain HTTP (see raspy.standin)
with standing_in(stand_in("http.client", responses={status: status.phrase for status in http.HTTPStatus})):
    import bottle

from raspy.errors import RaspyError
from raspy.house.control import duration as compact_duration
from raspy.house.health import size
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

    def hosts(self) -> list[dict[str, Any]]:
        """Every host's summary (``/host/``): ``{name, silent, last_seen, age, executives, health, ...}``."""

    def restart(self, name: str) -> str:
        """Ask the supervisor to restart ``name``; ``KeyError`` if unknown, :class:`Unavailable` if it cannot."""

    def scenarios(self) -> list[dict[str, Any]]:
        """Each scenario's published state: ``{name, active, running, params}``."""

    def call(self, service: str, command: str, args: Any) -> tuple[int, Any]:
        """One request to a service of the house (the one route that waits on the broker: a
        person's action, or a plot); :class:`Unavailable` when nothing answers."""


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
        "scenarios": sources.scenarios(),
        "events": sources.events(),
        "host": sources.host(),
        "hosts": sources.hosts(),
    }


# -- formatting helpers for the templates ----------------------------------------

def duration(seconds: float | None) -> str:
    """As ``raspy status`` writes it (``42s``, ``5m07s``); an en dash when unknown."""
    return "–" if seconds is None else compact_duration(seconds)


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


HELPERS = {"duration": duration, "size": size, "reading": reading, "sparkline": sparkline, "time": time,
           "SWITCHES": ("switch.relay", "switch"), "DIMMERS": ("light.dimmer",)}


# -- the app ---------------------------------------------------------------------

class Views:
    """The house's state, taken at most once per ``tick`` seconds, and each view of it rendered once.

    The state changes a few times a second at most, so the first request of a
    tick takes and renders it while the others wait for it, then every request
    of the tick shares the same bytes.
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

    def forget(self) -> None:
        """Take the state anew at the next request (an action has just changed the house)."""
        self._current = (-math.inf, {}, {})


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


#: Every answer: the page's own assets and nothing else, no framing, no guessing of types.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The largest JSON body a POST may carry.
MAX_BODY = 4096
#: A device as the page names it: ``<host>.<server>.<device>[.<part>]``.
DEVICE_NAME = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?)\Z")


def make_app(sources: Sources, token: str | None = None, refresh: float = 5.0, tick: float = 0.5) -> bottle.Bottle:
    """The WSGI app. ``token``: the secret a POST must carry; ``None`` or empty turns actions off.

    ``refresh`` is how often (seconds) the page's script refetches its content;
    ``tick`` how long (seconds) one state of the house serves the page, its
    fragment, ``/api/status`` and ``/metrics``.
    """
    app = bottle.Bottle()
    page = bottle.SimpleTemplate(name="page.tpl", lookup=[str(TEMPLATES)])
    fragment = bottle.SimpleTemplate(name="fragment.tpl", lookup=[str(TEMPLATES)])
    actions = bool(token)
    views = Views(lambda: snapshot(sources), tick)

    @app.hook("after_request")
    def secure() -> None:
        for name, value in SECURITY_HEADERS.items():
            bottle.response.set_header(name, value)
        if bottle.request.method == "POST":
            views.forget()  # the page refetches after an action: it shows the house as changed

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

    @app.get("/api/history")
    def api_history() -> str:
        query = bottle.request.query
        args: dict[str, Any] = {"device": query.getunicode("device") or ""}
        try:
            for key, kind in (("range", str), ("from", float), ("to", float), ("points", int)):
                if query.get(key) is not None:
                    args[key] = kind(query.getunicode(key))
        except ValueError as exc:
            return _json({"error": f"bad query: {exc}"}, 400)
        if "range" not in args and "from" not in args:
            args["range"] = "24h"
        return _relay(sources, f"{sources.hostname}.history.query", "get", args)

    if actions:
        _add_actions(app, sources, token)
        _add_controls(app, sources, token)

    @app.error(404)
    def not_found(error: bottle.HTTPError) -> str:
        return _json({"error": "not found", "path": bottle.request.path}, 404)

    @app.error(405)
    def not_allowed(error: bottle.HTTPError) -> str:
        return _json({"error": f"{bottle.request.method} is not allowed here"}, 405)

    return app


def _refusal(expected: bytes, what: str) -> str | None:
    """The 403 answer for a POST from another site or without the token; None when it may go on."""
    request = bottle.request
    origin = request.get_header("Origin")
    if origin is not None and origin != f"{request.urlparts.scheme}://{request.urlparts.netloc}":
        log.warning("refused %s from %s: Origin %r is not this page's", what, request.remote_addr, origin[:100])
        return _json({"error": "a request from another site is refused"}, 403)
    if not hmac.compare_digest(_token_of(request).encode(), expected):
        log.warning("refused %s from %s: bad token", what, request.remote_addr)
        return _json({"error": "a valid token is required"}, 403)
    return None


def _relay(sources: Sources, service: str, command: str, args: Any) -> str:
    """Ask a service; its answer as JSON: 200 with the result, its 400/403/404 with the reason."""
    try:
        status, result = sources.call(service, command, args)
    except Unavailable as exc:
        return _json({"error": str(exc)}, 503)
    if status == 200:
        return _json(result)
    reason = result if isinstance(result, str) else json.dumps(result, default=str)
    return _json({"error": reason}, status if status in (400, 403, 404) else 502)


def _body() -> dict[str, Any]:
    """A POST's JSON object (at most MAX_BODY bytes); ValueError with the reason otherwise."""
    request = bottle.request
    if request.content_type.split(";")[0].strip() != "application/json":
        raise ValueError("the body must be JSON (Content-Type: application/json)")
    data = request.body.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ValueError(f"the body is larger than {MAX_BODY} bytes")
    body = json.loads(data or b"null")
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _add_controls(app: bottle.Bottle, sources: Sources, token: str) -> None:
    """POST routes that act on the house through its services: a device, a scenario, a cron job."""
    expected = token.encode()
    core = f"{sources.hostname}.core"

    def guarded(what: str, action: Callable[[], str]) -> str:
        refused = _refusal(expected, what)
        if refused is not None:
            return refused
        try:
            return action()
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)

    @app.post("/api/devices/<name>/set")
    def set_device(name: str) -> str:
        def act() -> str:
            match = DEVICE_NAME.match(name)
            if match is None:
                return _json({"error": f"{name!r} is not <host>.<server>.<device>"}, 404)
            body = _body()
            if set(body) != {"value"}:
                raise ValueError('the body is {"value": ...}')
            host, server, device = match.groups()
            log.info("set %s to %r from %s", name, body["value"], bottle.request.remote_addr)
            return _relay(sources, f"{host}.{server}.devices", "set", [device, body["value"]])
        return guarded(f"a set of {name!r}", act)

    @app.post("/api/scenarios/<name>/<action:re:enable|disable>")
    def switch_scenario(name: str, action: str) -> str:
        return guarded(f"{action} of scenario {name!r}", lambda: _relay(sources, f"{core}.scenario", action, name))

    @app.post("/api/scenarios/<name>/params")
    def scenario_params(name: str) -> str:
        def act() -> str:
            body = _body()
            if set(body) != {"params"} or not isinstance(body["params"], dict):
                raise ValueError('the body is {"params": {...}}: the parameters to change')
            try:
                status, info = sources.call(f"{core}.scenario", "info", name)
            except Unavailable as exc:
                return _json({"error": str(exc)}, 503)
            if status != 200:
                return _json({"error": info}, status if status in (400, 404) else 502)
            params = {**(info.get("conf", {}).get("params") or {}), **body["params"]}
            return _relay(sources, f"{core}.scenarios", "update", {"name": name, "params": params})
        return guarded(f"a change of scenario {name!r}", act)

    @app.post("/api/cron/<job>/run")
    def run_job(job: str) -> str:
        return guarded(f"a run of cron job {job!r}", lambda: _relay(sources, f"{core}.cron", "run", job))


def _add_actions(app: bottle.Bottle, sources: Sources, token: str) -> None:
    """The POST routes, each checking ``token`` in constant time."""
    expected = token.encode()

    def restart(name: str, then: Callable[[str], str]) -> str:
        refused = _refusal(expected, f"a restart of {name!r}")
        if refused is not None:
            return refused
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
