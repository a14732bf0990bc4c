"""Titanic (9/TSP): durable requests, and a durable key/value store.

Titanic is an MDP worker for clients (``titanic.request``, ``titanic.reply``,
``titanic.close``, ``titanic.store``) and an MDP client of the real services.
Everything it accepts lives in one SQLite file in WAL mode with
``synchronous=FULL``: a request is committed, and so fsynced, before its
``200`` goes back, so it survives ``kill -9`` and a power cut. Delivery is
at least once: a request whose reply was not yet stored when Titanic died is
sent again after a restart.

Writes use group commit: a writer that finds no commit under way commits
every write queued so far in one transaction (one fsync), and each waiting
thread is woken once, when its own write is committed. ``titanic.request`` is
served on several connections by one thread, which stores the requests that
arrived together in one write, so concurrent clients share fsyncs. See
docs/titanic.md.
"""
