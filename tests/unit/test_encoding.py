"""Content-Encoding is undone before a body is stored."""

from __future__ import annotations

import gzip
import zlib

import pytest

from llm_cache.encoding import decode_content

RAW = b'{"id": "chatcmpl-1", "choices": []}' * 20


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    "encoded, encoding",
    [
        (gzip.compress(RAW, mtime=0), "gzip"),
        (gzip.compress(RAW, mtime=0), "GZIP"),
        (gzip.compress(RAW, mtime=0), "x-gzip"),
        (zlib.compress(RAW), "deflate"),
        (raw_deflate(RAW), "deflate"),
        (RAW, "identity"),
        (gzip.compress(zlib.compress(RAW), mtime=0), "deflate, gzip"),  # last applied first
    ],
)
def test_decodes(encoded, encoding):
    assert encoded != RAW or encoding == "identity"
    assert decode_content(encoded, encoding) == RAW


@pytest.mark.parametrize("encoding", ["gzip", "deflate", None, ""])
def test_already_decoded_body_kept(encoding):
    assert decode_content(RAW, encoding) == RAW


@pytest.mark.parametrize("encoding", ["compress", "gzip, snappy"])
def test_unknown_encoding_raises_naming_it(encoding):
    with pytest.raises(ValueError, match=r"Content-Encoding '(compress|snappy)' cannot be decoded"):
        decode_content(gzip.compress(RAW, mtime=0), encoding)
