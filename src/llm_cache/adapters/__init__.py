"""Thin adapters from client libraries onto the engine: httpx/httpx2 transports, vcrpy's
patches for the other clients, and functions (``@cached``)."""
