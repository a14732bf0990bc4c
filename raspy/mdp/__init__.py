"""7/MDP and 8/MMI: the wire, the client, the worker, the service convention and the broker."""
