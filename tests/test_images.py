"""Image sizes from header bytes, fetched from a real HTTP server on 127.0.0.1 (so every probe
here allows private hosts; tests/test_untrusted.py covers the guard). The AVIF, HEIC, TIFF and
rotated JPEG files in tests/fixtures/images/ come from real encoders (make_fixtures.py there)."""

from __future__ import annotations

import socket
import struct
import time
import zlib
from pathlib import Path

import pytest

from batchgate.images import ImageProbe, ProbeError, image_size
from batchgate.schema import BLOG, build_items
from batchgate.validation.rules import AspectParams, AspectRatio, Context
from tests.conftest import HttpServer, Route, blog_row

FIXTURES = Path(__file__).parent / "fixtures" / "images"


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


def exif_orientation(orientation: int) -> bytes:
    """An APP1 segment with a big-endian EXIF block whose one tag is the orientation."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, exif_bytes: int = 0, orientation: int = 0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    body = app0 + (exif_orientation(orientation) if orientation else b"")
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


def tiff(width: int, height: int, directory_at: int = 8) -> bytes:
    """A little-endian TIFF whose first directory (width, height) starts at `directory_at`."""
    entries = [(256, 4, width), (257, 4, height), (274, 3, 1)]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
    header = b"II*\x00" + struct.pack("<I", directory_at)
    return header + b"\x00" * (directory_at - len(header)) + ifd + struct.pack("<I", 0)


def webp_vp8(width: int, height: int, scale: int = 0) -> bytes:
    size = struct.pack("<HH", width | scale << 14, height | scale << 14)
    frame = b"\x00\x00\x00" + b"\x9d\x01\x2a" + size
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(frame))
        + b"WEBP"
        + b"VP8 "
        + struct.pack("<I", len(frame))
        + frame
    )


@pytest.mark.parametrize(
    "make", [png, jpeg, gif, webp_vp8x, webp_vp8l, webp_vp8, tiff], ids=lambda f: f.__name__
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
    assert "not a PNG, JPEG, GIF, WebP, AVIF, HEIC, TIFF or SVG header" in str(sizes[html])
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


# --- formats read through imagesize ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shown",
    [
        ("hero.avif", (48, 27)),
        ("hero.heic", (48, 27)),  # coded as 64x64 by x265; its clean aperture (clap) is 48x27
        ("hero.tif", (48, 27)),  # Pillow writes the directory after the pixels
        ("rotated.jpg", (27, 48)),  # stored 48x27 with EXIF orientation 6: shown turned
    ],
)
def test_encoder_files_are_read_over_http_as_a_viewer_shows_them(
    http_server: HttpServer, name: str, shown: tuple[int, int]
) -> None:
    route = Route((FIXTURES / name).read_bytes())
    url = http_server.add(f"/{name}", route)
    assert ImageProbe(allow_private_hosts=True, timeout=2).sizes([url]) == {url: shown}
    assert [r["Range"] for r in route.requests] == ["bytes=0-65535"]


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) of the boxes laid end to end in `data` (32-bit sizes, as here)."""
    found, start = [], 0
    while start < len(data):
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        found.append((kind, data[start + 8 : start + size]))
        start += size
    return found


def replaced(data: bytes, kind: bytes, payload: bytes) -> bytes:
    return b"".join(box(k, payload if k == kind else p) for k, p in boxes(data))


def with_properties(data: bytes, *properties: bytes) -> bytes:
    """A HEIF/AVIF fixture with the property boxes added to ipco and, marked essential, to the
    primary item's ipma entry, as libheif writes a transform. The boxes after meta move, so iloc
    no longer points at the pixels: the file cannot be decoded, but the probe reads no pixels."""
    meta = dict(boxes(data))[b"meta"]
    inner = dict(boxes(meta[4:]))
    pitm = inner[b"pitm"]
    primary = int.from_bytes(pitm[4:6] if pitm[0] == 0 else pitm[4:8], "big")
    iprp = dict(boxes(inner[b"iprp"]))
    ipco, ipma = iprp[b"ipco"], iprp[b"ipma"]
    first = len(boxes(ipco)) + 1  # the new properties' 1-based indexes
    version, wide = ipma[0], ipma[3] & 1
    id_size, step = (2 if version == 0 else 4), (2 if wide else 1)
    added = b"".join(
        (0x8000 | i).to_bytes(2, "big") if wide else bytes([0x80 | i])
        for i in range(first, first + len(properties))
    )
    entries, cursor = ipma[:8], 8
    for _ in range(int.from_bytes(ipma[4:8], "big")):
        item = int.from_bytes(ipma[cursor : cursor + id_size], "big")
        count = ipma[cursor + id_size]
        indexes = ipma[cursor + id_size + 1 : cursor + id_size + 1 + count * step]
        if item == primary:
            count, indexes = count + len(properties), indexes + added
        entries += ipma[cursor : cursor + id_size] + bytes([count]) + indexes
        cursor += id_size + 1 + ipma[cursor + id_size] * step
    assert added in entries, "the fixture has no ipma entry for its primary item"
    iprp_payload = replaced(inner[b"iprp"], b"ipco", ipco + b"".join(properties))
    iprp_payload = replaced(iprp_payload, b"ipma", entries)
    return replaced(data, b"meta", meta[:4] + replaced(meta[4:], b"iprp", iprp_payload))


def irot(quarter_turns: int) -> bytes:
    """ISO/IEC 23008-12's irot: a plain box of 1 byte, the low 2 bits anti-clockwise turns."""
    return box(b"irot", bytes([quarter_turns]))


@pytest.mark.parametrize(
    "name, turns, shown",
    [
        ("hero.heic", 1, (27, 48)),  # 90 degrees: width and height swap
        ("hero.heic", 2, (48, 27)),  # 180 degrees: they do not
        ("hero.heic", 3, (27, 48)),
        ("hero.avif", 1, (27, 48)),
        ("hero.avif", 2, (48, 27)),
    ],
)
def test_a_heif_rotation_written_to_spec_is_read_over_http(
    http_server: HttpServer, name: str, turns: int, shown: tuple[int, int]
) -> None:
    rotated = with_properties((FIXTURES / name).read_bytes(), irot(turns))
    url = http_server.add(f"/turned-{turns}-{name}", Route(rotated))
    assert ImageProbe(allow_private_hosts=True, timeout=2).sizes([url]) == {url: shown}


def test_a_heif_mirror_keeps_the_size_and_irot_as_a_full_box_still_turns_it() -> None:
    heic = (FIXTURES / "hero.heic").read_bytes()
    imir = box(b"imir", b"\x01")  # mirrored about the horizontal axis: the size is unchanged
    assert image_size(with_properties(heic, imir)) == (48, 27)
    assert image_size(with_properties(heic, irot(1), imir)) == (27, 48)
    assert image_size(with_properties(heic, irot(5))) == (27, 48)  # the reserved bits are ignored
    full_box = box(b"irot", bytes(4) + b"\x01")  # version and flags first: what imagesize reads
    assert image_size(with_properties(heic, full_box)) == (27, 48)
    assert image_size(with_properties(heic, irot(1))[:300]) is None  # meta not all here yet


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_5_to_8_swaps_width_and_height(orientation: int) -> None:
    shown = (900, 1600) if orientation >= 5 else (1600, 900)
    assert image_size(jpeg(1600, 900, orientation=orientation)) == shown


def test_sizes_imagesize_reads_short_are_corrected() -> None:
    assert image_size(gif(40_000, 300)) == (40_000, 300)  # imagesize reads a GIF's sides signed
    assert image_size(webp_vp8(1600, 900, scale=2)) == (1600, 900)  # VP8's 2 scale bits


SVG = """<svg xmlns="http://www.w3.org/2000/svg" {attrs}><rect width="3" height="4"/></svg>"""


@pytest.mark.parametrize(
    "document, size",
    [
        (SVG.format(attrs='width="160" height="90"'), (160, 90)),
        (SVG.format(attrs='width="2in" height="1in"'), (192, 96)),
        (SVG.format(attrs='width="100%" viewBox="0 0 1600 900"'), (1600, 900)),
        (SVG.format(attrs='viewBox="0,0,16,9"'), (16, 9)),  # not the <rect>'s 3x4
        (
            '\ufeff<?xml version="1.0"?>\n<!-- made by hand -->\n<!DOCTYPE svg>\n'
            + SVG.format(attrs='width="40px" height="30px"'),
            (40, 30),
        ),  # fmt: skip
        (SVG.format(attrs='width="100%"'), None),  # no size anywhere in its tag
        ("<!DOCTYPE html><html><body>" + SVG.format(attrs='width="16" height="16"'), None),
    ],
)
def test_svg_sizes_come_from_the_svg_tag(document: str, size: tuple[int, int] | None) -> None:
    assert image_size(document.encode()) == size


def test_an_svg_is_fetched_and_one_without_a_size_is_reported(http_server: HttpServer) -> None:
    wide = http_server.add("/wide.svg", Route(SVG.format(attrs='viewBox="0 0 1600 900"').encode()))
    flat = http_server.add("/flat.svg", Route(SVG.format(attrs='width="50%"').encode()))
    sizes = ImageProbe(allow_private_hosts=True, timeout=2).sizes([wide, flat])
    assert sizes[wide] == (1600, 900)
    assert "an SVG whose <svg> tag gives no width and height" in str(sizes[flat])


@pytest.mark.timeout(10)  # a backtracking prolog pattern would take 2**5000 steps: it would hang
def test_an_svg_prolog_that_never_opens_an_svg_is_not_a_slow_regex() -> None:
    started = time.monotonic()
    assert image_size(b"<!---->" + b" " * 5_000 + b"x") is None
    assert image_size(b"<?x" * 20_000) is None
    assert image_size(b"<!--" + b" <!-- " * 10_000) is None
    assert time.monotonic() - started < 1.0


def test_bytes_are_never_opened_as_a_file_name(tmp_path: Path) -> None:
    path = tmp_path / "real.png"
    path.write_bytes(png(31, 17))
    assert image_size(str(path).encode()) is None  # imagesize.get(bytes) would open the path


# --- a header past the first range -------------------------------------------------------------


def test_a_header_past_the_first_range_is_read_with_one_more_range(http_server: HttpServer) -> None:
    route = Route(jpeg(1920, 1080, exif_bytes=150_000) + b"\x00" * 600_000)
    url = http_server.add("/exif.jpg", route)  # the server honours ranges: 64 KiB, then the rest
    assert ImageProbe(allow_private_hosts=True, timeout=2).sizes([url])[url] == (1920, 1080)
    assert [r["Range"] for r in route.requests] == ["bytes=0-65535", "bytes=65536-524287"]


def test_a_tiff_directory_past_the_cap_is_named(http_server: HttpServer) -> None:
    near = http_server.add("/near.tif", Route(tiff(1600, 900, directory_at=200_000)))
    far = http_server.add("/far.tif", Route(tiff(1600, 900, directory_at=700_000)))
    sizes = ImageProbe(allow_private_hosts=True, timeout=2).sizes([near, far])
    assert sizes[near] == (1600, 900)
    assert "the first 524,288 bytes hold a TIFF header whose first directory" in str(sizes[far])
    assert "starts at byte 700,000" in str(sizes[far])
