"""A real Mosquitto broker for the MQTT tests, on a free port with a configuration of its own.

The Makefile installs Mosquitto (apt, when root); without it the tests that
need it skip and say why. :class:`HomeAssistant` is a paho client that plays
Home Assistant: it records every message it sees, retained or not.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from support import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
OPENSSL = shutil.which("openssl")
PASSWD = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (make tests installs it with apt when run as root)")


class Mosquitto:
    """One ``mosquitto`` process: listener on 127.0.0.1, anonymous or with a password file, no persistence."""

    def __init__(self, tmp_path: Path, logins: dict[str, str] | None = None, tls: "Certificates | None" = None) -> None:
        self.dir = tmp_path / f"mosquitto-{free_port()}"
        self.dir.mkdir()
        self.port = free_port()
        self.tls = tls
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "user root",
                 f"allow_anonymous {'false' if logins else 'true'}"]
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
                      "require_certificate true"]
        if logins:
            passwd = self.dir / "passwd"
            passwd.touch(mode=0o600)
            for user, password in logins.items():
                subprocess.run([PASSWD, "-b", str(passwd), user, password], check=True, capture_output=True)
            lines.append(f"password_file {passwd}")
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        with open(self.dir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.listening, what=f"mosquitto on port {self.port}")
        return self

    def listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited {self.proc.returncode}: {self.log()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        """kill -9: no goodbye to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        return (self.dir / "mosquitto.log").read_text(errors="replace")


class Certificates:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    def __init__(self, folder: Path) -> None:
        if OPENSSL is None:
            pytest.skip("openssl is not installed: no certificates for the TLS test")
        folder.mkdir(exist_ok=True)
        self.ca, ca_key = folder / "ca.crt", folder / "ca.key"
        self._openssl("req", "-x509", "-keyout", ca_key, "-out", self.ca, "-days", "1", "-subj", "/CN=RasPy test CA")
        self.server_cert, self.server_key = self._signed(folder, "server", "127.0.0.1", ca_key)
        self.client_cert, self.client_key = self._signed(folder, "client", "raspy", ca_key)

    def _signed(self, folder: Path, name: str, common_name: str, ca_key: Path) -> tuple[Path, Path]:
        cert, key, request = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
        self._openssl("req", "-keyout", key, "-out", request, "-subj", f"/CN={common_name}")
        extensions = folder / f"{name}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "")
        subprocess.run([OPENSSL, "x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial",
                        "-out", cert, "-days", "1", "-extfile", extensions], check=True, capture_output=True)
        return cert, key

    @staticmethod
    def _openssl(command: str, *args) -> None:
        subprocess.run([OPENSSL, command, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        *args], check=True, capture_output=True)


class HomeAssistant:
    """A paho client subscribed to ``filters``; ``messages`` holds every (topic, payload, retained) seen."""

    def __init__(self, broker: Mosquitto, *filters: str, username: str | None = None, password: str | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-{free_port()}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(str(broker.tls.ca), str(broker.tls.client_cert), str(broker.tls.client_key))
        self.client.on_connect = lambda c, u, f, reason, p: c.subscribe([(t, 1) for t in filters])
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the Home Assistant client did not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def last(self, topic: str) -> bytes | None:
        """The latest payload seen on ``topic``."""
        with self.lock:
            found = [payload for t, payload, _ in self.messages if t == topic]
        return found[-1] if found else None

    def wait(self, topic: str, check=lambda payload: True, timeout: float = 10.0) -> bytes:
        """The latest payload on ``topic`` once ``check(payload)`` holds for it."""
        def seen():
            payload = self.last(topic)
            return payload is not None and check(payload) and [payload]

        return wait_for(seen, timeout, what=f"a matching message on {topic} (last: {self.last(topic)!r})")[0]

    def count(self, topic: str) -> int:
        with self.lock:
            return sum(t == topic for t, _, _ in self.messages)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
