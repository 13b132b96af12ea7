"""Where entries live. Each store implements ``protocol.Store``."""

from __future__ import annotations

from .files import FileStore
from .protocol import Store

__all__ = ["Store", "FileStore"]
