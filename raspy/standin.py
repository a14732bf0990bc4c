"""Stand-ins: import a library without a module it imports for something RasPy never uses.

The supervisor imports every executive's code before it forks, so every module it imports is
mapped by every process of the house. A few libraries import a big module for one thing that
RasPy never calls through them (APScheduler: asyncio, importlib.metadata, multiprocessing;
bottle: ssl, by way of http.client). :func:`standing_in` puts a small stand-in in
``sys.modules`` while such a library is imported, and takes it out again: a later import of that
module, by code that does use it, loads the real one. A module already loaded is not stood in
for (it costs nothing more).
"""
from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from typing import Iterator


def stand_in(name: str, **attributes: object) -> types.ModuleType:
    """A module ``name`` holding only ``attributes``: what the library takes from the real one."""
    module = types.ModuleType(name, "a stand-in while a library is imported (raspy.standin)")
    module.__dict__.update(attributes)
    return module


@contextmanager
def standing_in(*modules: types.ModuleType) -> Iterator[None]:
    """Import a library in this block with ``modules`` in place of the real ones not yet loaded."""
    added = [module.__name__ for module in modules if sys.modules.setdefault(module.__name__, module) is module]
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]
