"""The house: configuration, executives, the supervisor and its shared-memory board."""
