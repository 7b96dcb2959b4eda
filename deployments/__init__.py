"""Reusable Ray Serve deployments: thin wrappers that load once, batch, and delegate to mlsd."""
