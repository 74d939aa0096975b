"""Image dimensions from header bytes (PNG, JPEG, GIF, WebP), fetched with a small ranged GET
through the network guard (batchgate/netguard.py): the URLs come from item data."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from batchgate.netguard import BlockedHost, ResolveTimeout, guarded_client

HEADER_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 512 * 1024
MAX_REDIRECTS = 5


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of an image, or None if they are not there (yet)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b0, b1, b2, b3 = data[21:25]
        width = 1 + (((b1 & 0x3F) << 8) | b0)
        height = 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
        return width, height
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    return None


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS:
            if offset + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + length
    return None


class ProbeError(Exception):
    """The image could not be fetched or read; the message says why, for the report."""


class BlockedURL(ProbeError):
    """The URL, or a redirect from it, leads to an address item URLs may not reach."""


# Ask for the bytes as stored: a compressed body would have to be decoded before the cap applies.
_HEADERS = {"Range": f"bytes=0-{HEADER_CHUNK - 1}", "Accept-Encoding": "identity"}


@dataclass(slots=True)
class ImageProbe:
    """Fetches images' header bytes over HTTP, concurrently, and caches their sizes by URL.

    Each image gets `deadline` seconds in all (redirects and slow servers included), at most
    `max_bytes` read (decoded bytes too: a gzip body is never inflated past it), at most
    MAX_REDIRECTS redirects, and reaches private addresses only if `allow_private_hosts`."""

    timeout: float = 5.0  # per connect and per read
    workers: int = 8
    max_bytes: int = MAX_HEADER_BYTES
    deadline: float = 15.0
    allow_private_hosts: bool = False
    exempt: frozenset[str] = frozenset()  # addresses let through whatever the setting (tests)

    def sizes(self, urls: Iterable[str]) -> dict[str, tuple[int, int] | ProbeError]:
        unique = sorted(set(urls))
        if not unique:
            return {}
        client = guarded_client(self.allow_private_hosts, self.timeout, self.workers, self.exempt)
        with client, ThreadPoolExecutor(max_workers=min(self.workers, len(unique))) as pool:
            results = pool.map(lambda u: self._probe(client, u), unique)
            return dict(zip(unique, results, strict=True))

    def _probe(self, client: httpx.Client, url: str) -> tuple[int, int] | ProbeError:
        try:
            return self._fetch_size(client, url)
        except ProbeError as exc:
            return exc

    def _fetch_size(self, client: httpx.Client, url: str) -> tuple[int, int]:
        stop = time.monotonic() + self.deadline
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if not current.startswith(("http://", "https://")):
                via = "" if current == url else f" (redirected from {url})"
                raise ProbeError(f"'{current}'{via} is not an http(s) URL")
            try:
                with client.stream(
                    "GET", current, headers=_HEADERS, timeout=self._timeout(stop)
                ) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        current = str(response.url.join(location))
                        continue
                    if response.status_code >= 400:
                        raise ProbeError(f"the server answered HTTP {response.status_code}")
                    return self._read_size(response, stop)
            except BlockedHost as exc:
                via = "" if current == url else f" (a redirect led to {current})"
                raise BlockedURL(
                    f"{exc}{via}; item URLs may not reach loopback, private, link-local or "
                    "reserved addresses"
                ) from None
            except (httpx.TimeoutException, ResolveTimeout):
                raise self._late(stop) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise ProbeError(f"the request failed ({type(exc).__name__}: {exc})") from None
        raise ProbeError(f"more than {MAX_REDIRECTS} redirects")

    def _timeout(self, stop: float) -> float:
        left = stop - time.monotonic()
        if left <= 0:
            raise self._late(stop)
        return min(self.timeout, left)

    def _late(self, stop: float) -> ProbeError:
        if time.monotonic() >= stop:
            return ProbeError(f"no complete answer within the {self.deadline:g} s deadline")
        return ProbeError(f"no answer within {self.timeout:g} s")

    def _read_size(self, response: httpx.Response, stop: float) -> tuple[int, int]:
        """Read (and decode, bounded) until the header shows a size, the cap, or the deadline."""
        decoder = _Decoder(response.headers.get("content-encoding", ""))
        data, raw_total = b"", 0
        for raw in response.iter_raw():
            raw_total += len(raw)
            data += decoder.decode(raw, self.max_bytes - len(data))
            size = image_size(data)
            if size:
                return size
            if len(data) >= self.max_bytes or raw_total >= self.max_bytes:
                break
            if time.monotonic() >= stop:
                raise self._late(stop)
        kind = "no image data" if not data else "not a PNG, JPEG, GIF or WebP header"
        raise ProbeError(f"the first {len(data):,} bytes hold {kind}")


_REDIRECTS = {301, 302, 303, 307, 308}


class _Decoder:
    """Decodes a body as sent (identity, gzip or deflate), never past the bytes asked for."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            wbits = zlib.MAX_WBITS | 16 if "gzip" in encoding else zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
            self._deflate = encoding == "deflate"
        else:
            raise ProbeError(
                f"the server sent the image encoded as {encoding!r}, which the probe does not "
                "decode (it asks for the bytes as stored)"
            )

    def decode(self, raw: bytes, budget: int) -> bytes:
        if budget <= 0:
            return b""
        if self._zlib is None:
            return raw[:budget]
        try:
            return self._zlib.decompress(raw, budget)  # max_length: the bomb stops here
        except zlib.error:
            if self._deflate and not self._zlib.eof:  # deflate sent raw, without the zlib wrapper
                self._zlib, self._deflate = zlib.decompressobj(-zlib.MAX_WBITS), False
                return self.decode(raw, budget)
            raise ProbeError("the body is not valid gzip/deflate data") from None
