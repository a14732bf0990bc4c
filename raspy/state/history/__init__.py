"""Device histories on fixed-size files: round-robin archives, batched writes (see docs/history.md)."""
