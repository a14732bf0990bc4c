"""The broker's hot path: the compiled core when it was built, else its pure-Python twin.

``RASPY_PURE=1`` forces the twin (tests run against both).
"""
import os

if os.environ.get("RASPY_PURE"):
    from raspy.mdp._fast.pure import BrokerCore
else:
    try:
        from raspy.mdp._fast.core import BrokerCore  # type: ignore[no-redef]
    except ImportError:
        from raspy.mdp._fast.pure import BrokerCore

COMPILED: bool = BrokerCore.compiled
IMPLEMENTATION = "compiled (Cython)" if COMPILED else "pure Python"

__all__ = ["BrokerCore", "COMPILED", "IMPLEMENTATION"]
