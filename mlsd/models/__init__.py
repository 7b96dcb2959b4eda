"""Models of the systems (pure torch)."""
