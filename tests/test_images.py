"""Image sizes from header bytes, fetched from a real HTTP server on 127.0.0.1 (so every probe
here allows private hosts; tests/test_untrusted.py covers the guard)."""

from __future__ import annotations

import socket
import struct
import zlib

import pytest

from batchgate.images import ImageProbe, ProbeError, image_size
from batchgate.schema import BLOG, build_items
from batchgate.validation.rules import AspectParams, AspectRatio, Context
from tests.conftest import HttpServer, Route, blog_row


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int, exif_bytes: int = 0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    body = app0
    while exif_bytes > 0:  # APP1 segments of at most 65,533 bytes, as a camera writes them
        size = min(exif_bytes, 65_000)
        body += b"\xff\xe1" + struct.pack(">H", size + 2) + b"\x00" * size
        exif_bytes -= size
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 17, 8, height, width, 3)
        + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + body + sof + b"\xff\xda" + b"\x00" * 200 + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def webp_vp8x(width: int, height: int) -> bytes:
    payload = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBP"
        + b"VP8X"
        + struct.pack("<I", 10)
        + payload
    )


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little")
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBP"
        + b"VP8L"
        + struct.pack("<I", 5)
        + payload
    )


def webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(frame))
        + b"WEBP"
        + b"VP8 "
        + struct.pack("<I", len(frame))
        + frame
    )


@pytest.mark.parametrize(
    "make", [png, jpeg, gif, webp_vp8x, webp_vp8l, webp_vp8], ids=lambda f: f.__name__
)
def test_header_sizes(make) -> None:
    assert image_size(make(1600, 900)) == (1600, 900)
    assert image_size(make(31, 17)) == (31, 17)


def test_truncated_and_foreign_headers() -> None:
    assert image_size(png(10, 10)[:20]) is None
    assert image_size(jpeg(10, 10, exif_bytes=70_000)[:1000]) is None
    assert image_size(b"<html>not an image</html>") is None


def test_probe_fetches_only_the_header_with_a_range(http_server: HttpServer) -> None:
    route = Route(png(1600, 1200) + b"\x00" * 200_000)
    url = http_server.add("/hero.png", route)
    assert ImageProbe(allow_private_hosts=True, timeout=2).sizes([url, url]) == {url: (1600, 1200)}
    assert len(route.requests) == 1  # the same URL is fetched once
    assert route.requests[0]["Range"] == "bytes=0-65535"


def test_probe_reads_on_when_the_header_is_past_the_first_chunk(http_server: HttpServer) -> None:
    url = http_server.add(
        "/exif.jpg", Route(jpeg(1920, 1080, exif_bytes=150_000), honour_range=False)
    )
    assert ImageProbe(allow_private_hosts=True, timeout=2).sizes([url])[url] == (1920, 1080)


def test_probe_errors_are_reported_not_raised(http_server: HttpServer) -> None:
    missing = http_server.add("/gone.png", Route(b"", status=404))
    slow = http_server.add("/slow.png", Route(png(16, 9), delay=2.0))
    html = http_server.add("/page.png", Route(b"<html>nope</html>" * 10))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/x.png"  # nothing listens there
    sizes = ImageProbe(allow_private_hosts=True, timeout=0.5).sizes(
        [missing, slow, html, closed, "ftp://example.com/x.png"]
    )
    assert all(isinstance(v, ProbeError) for v in sizes.values())
    assert "HTTP 404" in str(sizes[missing])
    assert "no answer within 0.5 s" in str(sizes[slow])
    assert "not a PNG, JPEG, GIF or WebP" in str(sizes[html])
    assert "request failed" in str(sizes[closed])
    assert "not an http(s) URL" in str(sizes["ftp://example.com/x.png"])


def test_aspect_rule_uses_fetched_sizes_when_columns_are_empty(http_server: HttpServer) -> None:
    wide = http_server.add("/wide.png", Route(png(1600, 900)))
    square = http_server.add("/square.gif", Route(gif(500, 500)))
    broken = http_server.add("/broken.png", Route(b"", status=500))
    rows = [
        blog_row(i, hero_image_url=url, hero_width="", hero_height="")
        for i, url in enumerate([wide, square, broken], 1)
    ]
    unused = Route(png(1600, 900))
    rows.append(blog_row(4, hero_image_url=http_server.add("/unused.png", unused)))  # columns set
    items = build_items(((f"row {i}", r) for i, r in enumerate(rows, 1)), BLOG)
    rule = AspectRatio("hero_aspect_ratio", "hero_image_url", "warning", AspectParams())
    context = Context(probe=ImageProbe(allow_private_hosts=True, timeout=2))
    rule.prepare(items, context)
    issues = [list(rule.check(item, context)) for item in items]
    assert issues[0] == [] and issues[3] == []
    assert issues[1][0].severity == "warning" and "1.00 (500x500)" in issues[1][0].message
    assert issues[2][0].severity == "blocked" and "HTTP 500" in issues[2][0].message
    assert unused.requests == []  # sizes from the columns need no fetch
