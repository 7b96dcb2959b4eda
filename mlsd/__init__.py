"""The pure ML library of the project: models, losses, metrics, indexes, readers, rules.

Nothing in this package imports Ray Serve or Ray Train, so every piece is testable without Ray.
"""
