"""gzip / deflate bodies of inference requests and answers, as Triton offers them.

A compressed request is inflated in one bounded step: never more than the body cap
(``DATA_UPLOAD_MAX_MEMORY_SIZE``) comes out, so a small gzip bomb is a 413, not memory growth.
"Deflate" is the zlib format (RFC 9110; tritonclient sends ``zlib.compress``); a gzip header is
accepted under either name. An answer is compressed only when ``Accept-Encoding`` asks for it.
"""

from __future__ import annotations

import gzip
import zlib

from django.conf import settings

from modelhub.errors import Invalid, TooLarge
from predictions.inputs import UnsupportedMediaType

_CODINGS = ("gzip", "deflate")
_ANY_HEADER = 32 + zlib.MAX_WBITS  # inflate a zlib or a gzip stream, told apart by its header
# Level 1: an answer on loopback or a LAN is sent sooner with a fast compressor than a thorough one.
_LEVEL = 1


def inflate(body: bytes, encoding: str) -> bytes:
    """The request body without its Content-Encoding; 415 for a coding we do not speak."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in _CODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {coding[:20]!r} is not accepted; send gzip, deflate or none.")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    inflater = zlib.decompressobj(_ANY_HEADER)
    try:
        plain = inflater.decompress(body, limit + 1)  # stops after limit + 1 bytes, whatever the ratio
    except zlib.error as exc:
        raise Invalid(f"The {coding} body cannot be decompressed ({exc}).") from None
    if len(plain) > limit:
        raise TooLarge(f"The request body decompresses to more than the limit of {limit // (1024 * 1024)} MB.")
    if not inflater.eof:
        raise Invalid(f"The {coding} body is truncated.")
    return plain


def chosen(accept_encoding: str) -> str:
    """The coding to answer with: the first of the client's accepted codings that we offer, else ""."""
    for item in accept_encoding.split(","):
        coding, _, quality = item.strip().lower().partition(";")
        if coding in _CODINGS and quality.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            return coding
    return ""


def deflate(content: bytes, coding: str) -> bytes:
    """``content`` compressed with ``coding`` (gzip or deflate, as ``chosen`` returned it)."""
    if coding == "gzip":
        return gzip.compress(content, compresslevel=_LEVEL, mtime=0)
    return zlib.compress(content, _LEVEL)
