"""Clone-pattern key/value publisher (ZeroMQ Guide ch. 5, 12/CHP).

Device state flows to everyone through one server with three sockets:

- snapshot (ROUTER): a client asks ``ICANHAZ? <subtree>`` and gets every key
  under the subtree (KVSYNC), then ``KTHXBAI`` with the last sequence;
- publisher (PUB): every accepted update, with a strictly increasing sequence,
  and ``HUGZ`` once a second so clients know the server is alive;
- collector (PULL): clients push updates (KVSET). PULL rather than SUB because
  a SUB socket silently drops what arrives before its subscription is active
  and PUSH gives publishers back-pressure instead of loss.

A sequence is ``epoch << 32 | counter``. Each start of the server opens a new,
larger epoch (kept in the state file), so sequences never go backwards across a
restart and a subscriber that sees the epoch change knows the server restarted
and takes a new snapshot. See docs/kv.md for the wire, persistence and resync rules.

Values are bytes. RasPy publishes msgpack-encoded values (``protocol.pack``).
"""
