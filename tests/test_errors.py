"""One root for RasPy's exceptions, and one timeout for every client."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from support import free_endpoint

import raspy
from raspy.errors import RaspyError, RequestTimeout
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvPublisherClient, fetch_snapshot


def raspy_exceptions() -> list[type[BaseException]]:
    """Every public exception class defined in a RasPy module."""
    found = []
    for info in pkgutil.walk_packages(raspy.__path__, "raspy."):
        if info.name == "raspy.__main__" or info.name == "raspy.mdp._fast.core":
            continue  # the entry point runs the CLI; the compiled core may not be built
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not name.startswith("_")):
                found.append(value)
    return found


def test_every_exception_derives_from_raspy_error():
    classes = raspy_exceptions()
    assert len(classes) >= 15
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, RaspyError)]
    assert strays == []


def test_a_timeout_is_both_ours_and_the_builtin():
    assert issubclass(RequestTimeout, RaspyError) and issubclass(RequestTimeout, TimeoutError)


@pytest.mark.parametrize("call", [
    lambda endpoint: MajorDomoClient(endpoint, timeout=0.1, retries=1).call("nobody", "get"),
    lambda endpoint: KvPublisherClient(endpoint, timeout=0.1).send("/device/", "x", b"1"),
    lambda endpoint: fetch_snapshot("/device/", endpoint, timeout=0.1),
], ids=["mdp", "kv-publisher", "kv-snapshot"])
def test_every_client_times_out_with_request_timeout(call):
    with pytest.raises(RequestTimeout):
        call(free_endpoint())
