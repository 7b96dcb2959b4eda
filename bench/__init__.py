"""Benchmarks: each prints its figures side by side with its anchor, as ratios."""
