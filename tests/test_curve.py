"""Several hosts, one house: satellites join a hub over CURVE, each key allowed by name.

A hub (broker, kv, fake) and a satellite house (fake only) run as two real supervisors on this
machine, each with its own state directory, host name and key pair; what a person would check
is done with the ``raspy`` command, and impostors are raw sockets holding real keys.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from support import ROOT, free_endpoint, free_port, wait_for, write_config

from raspy.curve import Authenticator, Curve, init_keys
from raspy.house.trust import Trust
from raspy.errors import RequestTimeout
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvPublisherClient, fetch_snapshot

TIMINGS = {"heartbeat": 0.2, "liveness": 3, "backoff_start": 0.05, "backoff_cap": 0.2, "stop_timeout": 1.0}


def raspy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raspy", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=timeout)


class Host:
    """One host's configuration and supervisor; the hub binds the broker and kv, a satellite joins it."""

    def __init__(self, children, folder: Path, name: str, hub: "Host | None" = None) -> None:
        self.children, self.folder, self.name, self.hub = children, folder, name, hub
        folder.mkdir()
        self.state_dir = folder / "state"
        self.config = folder / "raspy.toml"
        if hub is None:
            self.broker = free_endpoint()
            self.kv = {k: free_endpoint() for k in ("snapshot", "publisher", "collector")}
        else:
            self.broker, self.kv = hub.broker, hub.kv
        self.public = self.keys("init").stdout.strip()
        self.proc: subprocess.Popen | None = None

    def write(self, **raspy_extra) -> None:
        settings = {"hostname": self.name, "state_dir": str(self.state_dir), "broker": self.broker,
                    **{f"kv_{k}": v for k, v in self.kv.items()}, "curve": True, **TIMINGS, **raspy_extra}
        executives: dict = {"fake": {"devices": [{"name": "tank", "kind": "cyclic", "cycle": 60, "poll": 1}]}}
        if self.hub is None:
            executives = {"broker": {}, "kv": {}, **executives}
        else:
            settings["hub_key"] = self.hub.public
        write_config(self.config, settings, executives)

    def keys(self, *args: str) -> subprocess.CompletedProcess:
        if not self.config.exists():
            self.write()
        return raspy("keys", *args, "--config", str(self.config))

    def start(self, env: dict | None = None) -> None:
        output = open(self.folder / "supervisor.out", "ab")
        self.proc = self.children.raspy("start", "--config", str(self.config), env=env,
                                        stdout=output, stderr=subprocess.STDOUT)
        output.close()

    def log(self, executive: str) -> str:
        path = self.state_dir / "logs" / f"{executive}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def curve(self) -> Curve:
        return Curve.load(self.state_dir, self.name, "" if self.hub is None else self.hub.public)


def context_of(curve: Curve | None) -> zmq.Context:
    """A context whose sockets are CURVE clients with ``curve``'s keys (plain without)."""
    context = zmq.Context()
    if curve is not None:
        curve.client(context)
    return context


def call(host: Host, service: str, command: str, curve: Curve | None = None, retries: int = 1):
    """One call through the hub's broker with ``curve``'s keys (the hub's own by default); None if unanswered."""
    context = context_of(curve or host.curve())
    try:
        with MajorDomoClient(host.broker, timeout=0.5, retries=retries, context=context) as client:
            return client.call(service, command)
    except RequestTimeout:
        return None
    finally:
        context.destroy(linger=0)


def live(hub: Host, service: str) -> bool:
    context = context_of(hub.curve())
    try:
        with MajorDomoClient(hub.broker, timeout=0.5, retries=1, context=context) as client:
            return client.send("mmi.service", [service.encode()]) == [b"200"]
    except RequestTimeout:
        return False
    finally:
        context.destroy(linger=0)


def kv_keys(hub: Host, subtree: str) -> set[str]:
    context = context_of(hub.curve())
    try:
        return set(fetch_snapshot(subtree, hub.kv["snapshot"], timeout=1.0, context=context)[1])
    finally:
        context.destroy(linger=0)


@pytest.fixture
def hub(children, tmp_path, request):
    """The hub; ``@pytest.mark.parametrize("hub", ["pure"], indirect=True)`` runs its broker's pure twin."""
    host = Host(children, tmp_path / "hub", "hub")
    host.start({"RASPY_PURE": "1"} if getattr(request, "param", "") == "pure" else None)
    wait_for(lambda: live(host, "hub.fake.devices"), timeout=20, what="the hub's fake device server")
    yield host
    host.proc.terminate()
    host.proc.wait(timeout=10)


@pytest.fixture
def satellite(children, tmp_path, hub):
    host = Host(children, tmp_path / "shed", "shed", hub)
    yield host
    if host.proc is not None and host.proc.poll() is None:
        host.proc.terminate()
        host.proc.wait(timeout=10)


def test_keys_init_makes_a_private_pair_once_and_allow_list_is_kept_by_name(children, tmp_path):
    host = Host(children, tmp_path / "pi", "pi")
    secret = host.state_dir / "curve" / "host.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert len(host.public) == 40 and host.keys("init").stdout.strip() == host.public  # kept, not remade
    other = init_keys(tmp_path / "other")[0].public
    assert host.keys("allow", "shed", other).returncode == 0
    assert host.keys("list").stdout == f"shed {other}\n"
    bad = host.keys("allow", "barn", "not-a-key")
    assert bad.returncode == 1 and "is not a CURVE public key" in bad.stderr
    assert host.keys("allow", "../etc", other).returncode == 1
    assert host.keys("list").stdout == f"shed {other}\n"  # a refused change changes nothing
    revoked = host.keys("revoke", "shed")
    assert revoked.returncode == 0 and "no house runs here" in revoked.stdout
    assert host.keys("list").stdout == ""
    assert host.keys("revoke", "shed").returncode == 1


def test_allow_takes_a_key_that_starts_with_a_dash_and_refuses_the_hubs_names(children, tmp_path):
    host = Host(children, tmp_path / "pi", "pi")
    dashed = next(key for key in (zmq.curve_keypair()[0].decode() for _ in range(100_000)) if key.startswith("-"))
    allowed = host.keys("allow", "barn", dashed)  # argparse would take it for an option
    assert allowed.returncode == 0, allowed.stderr
    assert host.keys("list").stdout == f"barn {dashed}\n"
    other = init_keys(tmp_path / "other")[0].public
    for name in ("pi", "titanic", "mmi"):  # the hub's own name would get the hub's rights
        refused = host.keys("allow", name, other)
        assert refused.returncode == 1 and f"{name!r} is reserved" in refused.stderr
    assert host.keys("list").stdout == f"barn {dashed}\n"


def test_a_hand_written_line_with_the_hubs_name_or_a_hub_service_gets_no_rights(tmp_path):
    init_keys(tmp_path / "hub")
    curve = Curve.load(tmp_path / "hub", "hub")
    impostor, titanic = (init_keys(tmp_path / name)[0].public for name in ("impostor", "titanic"))
    (tmp_path / "hub" / "curve" / "allowed").write_text(f"hub {impostor}\ntitanic {titanic}\n")
    names = Authenticator(curve).keys()
    assert impostor not in names and names[curve.keys.public] == "hub"
    assert not Trust("hub").may_serve(names[titanic], b"titanic.request")
    assert Trust("hub").may_serve("hub", b"titanic.request") and Trust("hub").may_serve("shed", b"shed.fake.devices")


def test_the_authenticator_refuses_a_handshake_it_cannot_decide_and_keeps_answering(tmp_path, caplog):
    init_keys(tmp_path / "hub")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the allow-list's folder should be")
    curve = Curve.load(tmp_path / "hub", "hub")
    curve = Curve(curve.hostname, curve.keys, curve.server_key, blocked / "allowed")  # os.stat: not a folder
    context = zmq.Context.instance()
    authenticator = Authenticator(curve).start()
    server = context.socket(zmq.ROUTER)
    clients: list[zmq.Socket] = []

    def hello() -> None:
        """A fresh client with the hub's own key (as RasPy's clients make a new socket to retry)."""
        client = context.socket(zmq.DEALER)
        clients.append(client)
        client.curve_publickey, client.curve_secretkey = curve.keys.public.encode(), curve.keys.secret.encode()
        client.curve_serverkey = curve.keys.public.encode()
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello")

    try:
        curve.serve(server)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        hello()
        wait_for(lambda: "ZAP request refused: NotADirectoryError" in caplog.text, what="the handshake refused")
        assert not server.poll(0)
        blocked.unlink()  # the list can be read again
        blocked.mkdir()
        hello()
        assert server.poll(10_000), "the authenticator stopped answering"
        assert [frame.get("User-Id") for frame in server.recv_multipart(copy=False)[1:]] == ["hub"]
    finally:
        for client in clients:
            client.close(0)
        server.close(0)
        authenticator.stop()


def test_a_curve_house_without_keys_and_a_plaintext_public_bind_do_not_start(tmp_path):
    config = write_config(tmp_path / "raspy.toml", {"state_dir": str(tmp_path / "state"), "curve": True},
                          {"broker": {}})
    started = raspy("start", "--config", str(config))
    assert started.returncode == 2 and "run 'raspy keys init'" in started.stderr
    port = free_port()
    open_bind = {"state_dir": str(tmp_path / "state"), "broker": f"tcp://0.0.0.0:{port}"}
    config = write_config(tmp_path / "raspy.toml", open_bind, {"broker": {}})
    started = raspy("start", "--config", str(config))
    assert started.returncode == 2
    assert f"executive broker would bind tcp://0.0.0.0:{port} in plaintext" in started.stderr


def test_an_unknown_satellite_is_refused_until_allowed_then_works_through_the_hub(hub, satellite):
    satellite.start()
    wait_for(lambda: "is not on" in hub.log("broker"), what="the hub's broker refusing the key")
    assert not live(hub, "shed.fake.devices")
    assert not any(k.startswith("/device/shed.") for k in kv_keys(hub, "/device/"))

    allowed = hub.keys("allow", "shed", satellite.public)  # no restart of the hub
    assert allowed.returncode == 0, allowed.stderr
    wait_for(lambda: live(hub, "shed.fake.devices"), timeout=15, what="the satellite's device server")
    wait_for(lambda: "/device/shed.fake.tank" in kv_keys(hub, "/device/"), what="the satellite's device in kv")
    listed = raspy("call", "--config", str(satellite.config), "shed.fake.devices", "list_keys")
    assert listed.returncode == 0 and listed.stdout.startswith("200") and "tank" in listed.stdout
    got = raspy("kv", "get", "/device/shed.fake.tank", "--config", str(hub.config))
    assert got.returncode == 0, got.stderr


def test_a_revoked_satellite_loses_access(hub, satellite):
    hub.keys("allow", "shed", satellite.public)
    satellite.start()
    wait_for(lambda: live(hub, "shed.fake.devices"), timeout=15, what="the satellite's device server")
    revoked = hub.keys("revoke", "shed")
    assert revoked.returncode == 0 and "cut shed's connections" in revoked.stdout, revoked.stdout + revoked.stderr
    wait_for(lambda: not live(hub, "shed.fake.devices"), timeout=10, what="the revoked service gone")
    assert call(hub, "shed.fake.devices", "list_keys", curve=satellite.curve()) is None
    assert live(hub, "hub.fake.devices")


def test_the_hubs_public_key_alone_or_plaintext_gets_nothing(hub, tmp_path):
    stranger = Curve.load(init_keys(tmp_path / "stranger")[0] and tmp_path / "stranger", "stranger", hub.public)
    assert call(hub, "hub.fake.devices", "list_keys", curve=stranger) is None
    context = zmq.Context()
    try:
        with MajorDomoClient(hub.broker, timeout=0.5, retries=1, context=context) as client:
            with pytest.raises(RequestTimeout):
                client.send("mmi.services", [])
    finally:
        context.destroy(linger=0)
    assert call(hub, "hub.fake.devices", "list_keys")[0] == p.OK  # the hub's own key is let in


def impostor_ready(hub: Host, curve: Curve, service: str) -> list[bytes] | None:
    """A raw worker with ``curve``'s keys sends READY for ``service``: what the broker sends back."""
    context = context_of(curve)
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.connect(hub.broker)
        dealer.send_multipart(p.worker_message(p.READY, service.encode()))
        return dealer.recv_multipart() if dealer.poll(3000) else None
    finally:
        context.destroy(linger=0)


@pytest.mark.parametrize("hub", ["compiled", "pure"], indirect=True)
def test_an_allowed_satellite_cannot_take_other_names_or_publish_other_devices(hub, satellite):
    hub.keys("allow", "shed", satellite.public)
    shed = satellite.curve()
    wait_for(lambda: "/device/hub.fake.tank" in kv_keys(hub, "/device/"), what="the hub's own device in kv")
    for service in ("titanic.request", "mmi.x", "hub.fake.devices", "barn.fake.devices"):
        assert impostor_ready(hub, shed, service) == p.worker_message(p.DISCONNECT), service
    assert impostor_ready(hub, shed, "shed.own.devices") == p.worker_message(p.HEARTBEAT)  # its own name: fine
    for _ in range(20):  # every call reaches the real service
        status, keys = call(hub, "hub.fake.devices", "list_keys", retries=3)
        assert status == p.OK and "tank" in keys
    context = context_of(shed)
    try:
        with KvPublisherClient(hub.kv["collector"], context=context) as publisher:
            publisher.send("/device/", "hub.fake.tank", b"\x01")
            publisher.send("/event/", "cron/backup", b"\x01")
            publisher.send("/device/", "shed.fake.probe", b"\x01")
    finally:
        context.destroy(linger=0)
    wait_for(lambda: "/device/shed.fake.probe" in kv_keys(hub, "/device/"), what="the satellite's own device")
    assert "/event/cron/backup" not in kv_keys(hub, "/event/")
    snapshot = fetch_snapshot("/device/hub.fake.tank", hub.kv["snapshot"], context=context_of(hub.curve()))[1]
    assert snapshot["/device/hub.fake.tank"].body != b"\x01"
    wait_for(lambda: "may not set b'/device/hub.fake.tank'" in hub.log("kv"), what="the refusal in kv's log")
    assert "may not serve titanic.request" in hub.log("broker")
