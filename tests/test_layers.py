"""The packages keep their layers: a client library never loads the house.

``mdp/`` and ``state/`` import nothing from ``house/``, ``executives/`` or
``automation/``; ``devices/`` imports no socket library; ``web/`` never imports
an executive; ``mqtt/`` (the bridge's library) never loads the house; nothing but the entry points and ``house/`` imports ``executives/``.
Checked twice: on the import statements of every module, and by importing each
public client in a fresh interpreter and looking at what got loaded.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "raspy"

#: package -> module prefixes it may not import
FORBIDDEN = {
    "raspy.mdp": ("raspy.house", "raspy.executives", "raspy.automation", "raspy.state", "raspy.web", "raspy.devices"),
    "raspy.state": ("raspy.house", "raspy.executives", "raspy.automation", "raspy.web", "raspy.devices"),
    "raspy.automation": ("raspy.house", "raspy.executives", "raspy.web"),
    "raspy.devices": ("raspy.house", "raspy.executives", "raspy.web", "raspy.state", "zmq", "socket"),
    "raspy.web": ("raspy.executives",),
    "raspy.mqtt": ("raspy.house", "raspy.executives", "raspy.automation", "raspy.web"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, wherever the statement stands (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for package, banned in FORBIDDEN.items():
            if name == package or name.startswith(package + "."):
                found += [f"{name} imports {target}" for target in sorted(imports(path))
                          if any(target == b or target.startswith(b + ".") for b in banned)]
    return found


def test_no_package_imports_across_its_layer():
    assert violations() == []


def test_the_rules_see_an_import_when_there_is_one():
    assert "raspy.house.board" in imports(PACKAGE / "web" / "house.py")


def test_the_device_model_loads_no_socket_library_even_indirectly():
    code = ("import importlib, pkgutil, sys, raspy.devices\n"
            "for module in pkgutil.iter_modules(raspy.devices.__path__):\n"
            "    importlib.import_module('raspy.devices.' + module.name)\n"
            "print(sorted(name for name in ('zmq', 'socket') if name in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


CLIENTS = [
    "from raspy.mdp.client import MajorDomoClient",
    "from raspy.mdp.worker import MajorDomoWorker, MajorDomoWorkerPool",
    "from raspy.mdp.broker import Broker",
    "from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient",
    "from raspy.state.titanic.client import TitanicClient",
    "from raspy.automation.store import TitanicStore",
    "from raspy.devices import BaseDevice, DeviceRegister",
    "from raspy.mqtt.bridge import Bridge",
    "import raspy.kvcli",
    "import raspy.cli",
]


@pytest.mark.parametrize("statement", CLIENTS)
def test_a_public_client_loads_no_house_module(statement):
    code = (f"import sys, json\n{statement}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('raspy.house', 'raspy.executives')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []
