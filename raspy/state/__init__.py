"""The house's state: the key/value map (clone pattern) and Titanic (durable requests, store)."""
