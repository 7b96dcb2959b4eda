"""Ray Serve applications, one per system of the book: ``build_app(args) -> Application``."""
