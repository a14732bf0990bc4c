"""Give freed memory back to the system.

glibc keeps what a process freed in its arenas (one per thread that
allocated) for reuse, so a process that held a burst of data stays that big
after freeing it. ``malloc_trim`` hands the free pages of every arena back.
On a C library without it (musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


def give_back() -> None:
    """Return the free pages of the C heap to the system (glibc's ``malloc_trim(0)``)."""
    if _trim is not None:
        _trim(0)
