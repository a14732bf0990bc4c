"""The import rules of docs/architecture.md, checked on the source."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from support import ROOT

PACKAGE = ROOT / "raspy"


def imports(package: str) -> dict[str, set[str]]:
    """``{module file: every module it imports}`` for the .py files under ``raspy/<package>``."""
    found = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path} imports {name}" for path, names in imports(package).items() for name in sorted(names)
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("package, forbidden", [
    ("mdp", ("raspy.house", "raspy.executives")),
    ("state", ("raspy.house", "raspy.executives")),
    ("devices", ("raspy.executives", "zmq", "socket")),
    ("web", ("raspy.executives",)),
])
def test_a_package_imports_nothing_the_architecture_forbids(package, forbidden):
    assert offenders(package, forbidden) == []


def test_the_device_model_loads_no_socket_library_even_indirectly():
    code = ("import importlib, pkgutil, sys, raspy.devices\n"
            "for module in pkgutil.iter_modules(raspy.devices.__path__):\n"
            "    importlib.import_module('raspy.devices.' + module.name)\n"
            "print(sorted(name for name in ('zmq', 'socket') if name in sys.modules))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                            cwd=ROOT, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_rules_see_an_import_when_there_is_one():
    assert any("raspy.house.board" in name for name in imports("web")["raspy/web/house.py"])
