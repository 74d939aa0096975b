"""Image dimensions from header bytes (PNG, JPEG, GIF, WebP), fetched with a small ranged GET."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

HEADER_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 512 * 1024


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


@dataclass(slots=True)
class ImageProbe:
    """Fetches images' header bytes over HTTP, concurrently, and caches their sizes by URL."""

    timeout: float = 5.0
    workers: int = 8
    max_bytes: int = MAX_HEADER_BYTES

    def sizes(self, urls: Iterable[str]) -> dict[str, tuple[int, int] | ProbeError]:
        unique = sorted(set(urls))
        if not unique:
            return {}
        limits = httpx.Limits(max_connections=self.workers)
        client = httpx.Client(timeout=self.timeout, follow_redirects=True, limits=limits)
        with client, ThreadPoolExecutor(max_workers=min(self.workers, len(unique))) as pool:
            results = pool.map(lambda u: self._probe(client, u), unique)
            return dict(zip(unique, results, strict=True))

    def _probe(self, client: httpx.Client, url: str) -> tuple[int, int] | ProbeError:
        try:
            return self._fetch_size(client, url)
        except ProbeError as exc:
            return exc

    def _fetch_size(self, client: httpx.Client, url: str) -> tuple[int, int]:
        if not url.startswith(("http://", "https://")):
            raise ProbeError(f"'{url}' is not an http(s) URL")
        headers = {"Range": f"bytes=0-{HEADER_CHUNK - 1}"}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    raise ProbeError(f"the server answered HTTP {response.status_code}")
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    size = image_size(data)
                    if size:
                        return size
                    if len(data) >= self.max_bytes:
                        break
        except httpx.TimeoutException:
            raise ProbeError(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ProbeError(f"the request failed ({type(exc).__name__}: {exc})") from None
        kind = "no image data" if not data else "not a PNG, JPEG, GIF or WebP header"
        raise ProbeError(f"the first {len(data):,} bytes hold {kind}")
