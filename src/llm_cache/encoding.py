"""Content-Encoding: bodies are stored decoded, whatever the server compressed them with."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

__all__ = ["decode_content", "decoders"]


def _deflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        # Some servers send raw deflate without the zlib header.
        return zlib.decompress(data, -zlib.MAX_WBITS)


def decoders() -> dict[str, Callable[[bytes], bytes]]:
    """The encodings this installation can decode (br and zstd when their packages are there)."""
    found: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.decompress,
        "x-gzip": gzip.decompress,
        "deflate": _deflate,
        "identity": lambda data: data,
    }
    try:
        import brotli

        found["br"] = brotli.decompress
    except ImportError:
        try:
            import brotlicffi

            found["br"] = brotlicffi.decompress
        except ImportError:
            pass
    try:
        from compression import zstd  # Python 3.14

        found["zstd"] = zstd.decompress
    except ImportError:
        try:
            from backports import zstd as backport

            found["zstd"] = backport.decompress
        except ImportError:
            try:
                import zstandard

                found["zstd"] = lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)
            except ImportError:
                pass
    return found


_DECODERS: dict[str, Callable[[bytes], bytes]] | None = None


def decode_content(raw: bytes, encoding: str | None) -> bytes:
    """``raw`` with every listed Content-Encoding undone, last applied first.

    Some clients (urllib3's ``.data``) hand over a body already decoded while
    the header still names the encoding: a body that does not decode is kept as it is.
    """
    global _DECODERS
    if not encoding or not raw:
        return raw
    if _DECODERS is None:
        _DECODERS = decoders()
    data = raw
    for name in reversed([e.strip().lower() for e in encoding.split(",") if e.strip()]):
        decoder = _DECODERS.get(name)
        if decoder is None:
            raise ValueError(
                f"Content-Encoding {name!r} cannot be decoded here; "
                "install its decoder (brotli for br, zstandard for zstd)"
            )
        try:
            data = decoder(data)
        except Exception:  # noqa: BLE001 - already decoded, or not what the header says
            return raw
    return data
