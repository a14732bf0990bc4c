"""RasPy: run a house from a Raspberry Pi over a ZeroMQ Majordomo broker."""

__version__ = "0.1.0"
