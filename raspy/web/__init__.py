"""RasPy's status page.

- :mod:`raspy.web.app`: the Bottle app over injected data sources (no sockets);
- :mod:`raspy.web.house`: the real sources (board, broker MMI, key/value map);
- :mod:`raspy.web.server`: the threaded WSGI server (the ``web`` executive is :mod:`raspy.executives.web`).
"""
