"""One module per executive ``kind``: what the supervisor forks."""
