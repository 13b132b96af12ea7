"""Content-Encoding: bodies are stored decoded, whatever the server compressed them with."""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["UndecodableBody", "decode_content", "decoders"]

_GZIP_MAGIC = b"\x1f\x8b"


class UndecodableBody(ValueError):
    """A body that does not decode as its Content-Encoding says (or cannot be decoded here)."""


def _inflate(data: bytes, wbits: int, name: str) -> tuple[bytes, bytes]:
    """One zlib-family stream decoded to its end, and what follows it."""
    stream = zlib.decompressobj(wbits)
    out = stream.decompress(data)
    if not stream.eof:
        raise UndecodableBody(f"its {name} data ends before the end of the stream (cut short)")
    return out, stream.unused_data


def _gzip(data: bytes) -> bytes:
    """Every gzip member, in order; bytes after the last member are ignored, as HTTP clients
    (httpx, urllib3) ignore them."""
    parts = []
    while True:
        out, data = _inflate(data, 16 + zlib.MAX_WBITS, "gzip")
        parts.append(out)
        if not data.startswith(_GZIP_MAGIC):
            return b"".join(parts)


def _deflate(data: bytes) -> bytes:
    try:
        return _inflate(data, zlib.MAX_WBITS, "deflate")[0]
    except zlib.error:
        # Some servers send raw deflate without the zlib header.
        return _inflate(data, -zlib.MAX_WBITS, "deflate")[0]


def decoders() -> dict[str, Callable[[bytes], bytes]]:
    """The encodings this installation can decode (br and zstd when their packages are there)."""
    found: dict[str, Callable[[bytes], bytes]] = {
        "gzip": _gzip,
        "x-gzip": _gzip,
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

    Raises ``UndecodableBody`` when it does not decode: a body the live client could
    not read (or read cut short) is not one to replay. One exception: some clients
    (urllib3's ``.data``) hand over a body already decoded while the header still
    names the encoding; a body that fails to decode and is valid UTF-8 text is taken
    for one of those and kept as it is (compressed data is never valid UTF-8 in practice).
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
            raise UndecodableBody(
                f"Content-Encoding {name!r} cannot be decoded here; "
                "install its decoder (brotli for br, zstandard for zstd)"
            )
        try:
            data = decoder(data)
        except Exception as exc:  # noqa: BLE001 - zlib, brotli and zstd each raise their own
            if _is_text(raw):
                return raw
            reason = str(exc) if isinstance(exc, UndecodableBody) else f"{type(exc).__name__}: {exc}"
            raise UndecodableBody(f"the body does not decode as Content-Encoding {name!r}: {reason}") from None
    return data


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
