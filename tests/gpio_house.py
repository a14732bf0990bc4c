"""What the GPIO tests share: gpiozero's mock pins, and a key/value server in a thread."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support import free_endpoint, wait_for

from raspy.state.kv.server import KvServer

#: For an executive started as a process: gpiozero's mock pins, with PWM for dimmers.
MOCK_ENV = {"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin"}


@contextmanager
def mock_pins() -> Iterator[MockFactory]:
    """gpiozero's pin factory for this process is a fresh MockFactory; its pins are ``pins.pin(N)``."""
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        Device.pin_factory = None


@contextmanager
def kv_server() -> Iterator[dict[str, str]]:
    """A key/value server in a thread; yields its endpoints as Settings takes them."""
    ends = {"kv_snapshot": free_endpoint(), "kv_publisher": free_endpoint(), "kv_collector": free_endpoint()}
    server = KvServer(ends["kv_snapshot"], ends["kv_publisher"], ends["kv_collector"])
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(server.ready.is_set, what="the kv server bound")
    try:
        yield ends
    finally:
        server.stop()
        thread.join(timeout=5)
