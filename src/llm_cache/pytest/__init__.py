"""The pytest side: ``plugin`` is the pytest11 entry point and holds only hooks and the fixture."""
