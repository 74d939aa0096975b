"""Image dimensions from header bytes, read by `imagesize` (PNG, JPEG, GIF, WebP, AVIF, HEIC,
TIFF, SVG, BMP), as a viewer shows them (EXIF / HEIF orientation applied), fetched with a small
ranged GET through the network guard (batchgate/netguard.py): the URLs come from item data."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import imagesize

from batchgate.netguard import BlockedHost, ResolveTimeout, guarded_client

HEADER_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 512 * 1024
MAX_REDIRECTS = 5
FORMATS = "PNG, JPEG, GIF, WebP, AVIF, HEIC, TIFF or SVG"
_TURNED = {5, 6, 7, 8}  # EXIF orientations shown turned a quarter: width and height swap


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as shown, from the first bytes of an image, or None if not there (yet)."""
    svg = _svg_tag(data)
    if svg:
        return _svg_size(svg)
    try:
        # A file object, never bytes or str: imagesize opens bytes as a path and fetches a str URL.
        info = imagesize.get_info(
            io.BytesIO(data), dpi=False, colors=False, channels=False, exif_rotation=False
        )
        size = _fixed(data, info.width, info.height)
    except Exception:  # a header cut short raises ValueError, struct.error, IndexError...
        # imagesize also raises on a HEIF rotation (irot) written to spec: read it here
        return _heif_size(data) if data[4:8] == b"ftyp" else None
    if size is None:
        return None
    return (size[1], size[0]) if info.rotation in _TURNED else size


def _fixed(data: bytes, width: int, height: int) -> tuple[int, int] | None:
    """imagesize's stored size, corrected where it reads a format short."""
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = width & 0xFFFF, height & 0xFFFF  # imagesize reads them signed
    if width < 0 or height < 0:
        return None
    if data[:4] == b"RIFF" and data[12:16] == b"VP8 ":
        width, height = width & 0x3FFF, height & 0x3FFF  # the top 2 bits are a scale, not size
    if data[4:8] == b"ftyp":
        return _clean_aperture(data) or (width, height)
    return width, height


# --- SVG: imagesize takes a width= of any element in the first 1,024 bytes, skips an SVG that
# opens with a comment or a doctype, and reads no viewBox; here only the <svg> tag counts.

_SVG_START = re.compile(
    # possessive (*+): the prolog is matched once, never backtracked into (no slow regex)
    r"\A\ufeff?(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*+(<svg\b[^>]*>)",
    re.DOTALL,
)
_VIEWBOX = re.compile(
    r"""(?<![\w:-])viewBox\s*=\s*(["'])\s*(\S+)[\s,]+(\S+)[\s,]+(\S+)[\s,]+(\S+)\s*\1"""
)


def _svg_tag(data: bytes) -> str | None:
    """The <svg ...> start tag if the data is an SVG document (in its first 64 KiB)."""
    if data[:HEADER_CHUNK].lstrip()[:1] not in (b"<", b"\xef"):  # "<" or a UTF-8 byte order mark
        return None
    match = _SVG_START.match(data[:HEADER_CHUNK].decode("utf-8", "replace"))
    return match.group(1) if match else None


def _svg_size(tag: str) -> tuple[int, int] | None:
    """The <svg> tag's width and height (in absolute units), else its viewBox's."""
    width, height = imagesize.get(io.BytesIO(tag.encode()))
    if width >= 0 and height >= 0:
        return round(width), round(height)
    box = _VIEWBOX.search(tag)
    try:
        return (round(float(box.group(4))), round(float(box.group(5)))) if box else None
    except ValueError:
        return None


# --- HEIF/AVIF: imagesize reports the coded size (ispe); an encoder that pads the picture (x265
# codes 48x27 as 64x64) crops it back with a clean-aperture box (clap), which is what is shown.
# imagesize reads a rotation (irot) as a 5-byte full box and raises on the 1-byte property of
# ISO/IEC 23008-12 (as libheif writes it): such a file is read here, ispe + clap + irot.

_HEIF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"}


def _clean_aperture(data: bytes) -> tuple[int, int] | None:
    """The primary item's clap width and height, if it has one (and the meta box is all here)."""
    for kind, start, end in _primary_properties(data) or []:
        if kind == b"clap" and end - start >= 16:
            wn, wd, hn, hd = struct.unpack(">IIII", data[start : start + 16])
            return (round(wn / wd), round(hn / hd)) if wd and hd else None
    return None


def _heif_size(data: bytes) -> tuple[int, int] | None:
    """The primary item's size as shown (ispe, cropped by clap, turned by irot), or None.

    irot's low 2 bits are the rotation in quarter turns anti-clockwise; a 1-byte payload is the
    standard's, a 5-byte one (version and flags first) the layout imagesize reads. A mirror
    (imir) leaves the size as it is."""
    ftyp = next(iter(_boxes(data, 0, len(data))), None)
    if ftyp is None or ftyp[0] != b"ftyp":
        return None
    brands = data[ftyp[1] : ftyp[1] + 4] + data[ftyp[1] + 8 : ftyp[2]]  # major, compatible
    if not any(brands[i : i + 4] in _HEIF_BRANDS for i in range(0, len(brands) - 3, 4)):
        return None
    try:
        properties = _primary_properties(data)
        if properties is None:
            return None
        coded = turns = None
        for kind, start, end in properties:
            if kind == b"ispe" and end - start >= 12:
                coded = struct.unpack(">II", data[start + 4 : start + 12])
            elif kind == b"irot" and end - start in (1, 5):
                turns = data[end - 1] & 0x03
            elif kind == b"irot":
                return None  # a rotation that cannot be read: the size as shown is unknown
        if coded is None:
            return None
        size = _clean_aperture(data) or coded
    except (IndexError, struct.error, ZeroDivisionError):
        return None
    return (size[1], size[0]) if turns in (1, 3) else size


def _primary_properties(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """The primary item's properties (type, payload start, end) in their ipma order, or None
    if the meta box is not all here or names no primary item."""
    meta = next((b for b in _boxes(data, 0, len(data)) if b[0] == b"meta"), None)
    if meta is None:
        return None
    children = {kind: (start, end) for kind, start, end in _boxes(data, meta[1] + 4, meta[2])}
    if b"pitm" not in children or b"iprp" not in children:
        return None
    pitm = children[b"pitm"][0]
    primary = int.from_bytes(data[pitm + 4 : pitm + (6 if data[pitm] == 0 else 8)], "big")
    iprp = list(_boxes(data, *children[b"iprp"]))
    ipco = next(((s, e) for kind, s, e in iprp if kind == b"ipco"), None)
    ipma = next(((s, e) for kind, s, e in iprp if kind == b"ipma"), None)
    if ipco is None or ipma is None:
        return None
    properties = list(_boxes(data, *ipco))
    indexes = _associations(data, *ipma).get(primary, [])
    return [properties[i - 1] for i in indexes if 0 < i <= len(properties)]


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of the ISO-BMFF boxes from start to end, while they are whole."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _associations(data: bytes, start: int, end: int) -> dict[int, list[int]]:
    """ipma: item id -> its property indexes (1-based), essential flag dropped."""
    version, wide = data[start], data[start + 3] & 1
    cursor, found = start + 8, {}
    for _ in range(int.from_bytes(data[start + 4 : start + 8], "big")):
        id_size, step = (2 if version == 0 else 4), (2 if wide else 1)
        if cursor + id_size + 1 > end:
            break
        item = int.from_bytes(data[cursor : cursor + id_size], "big")
        count = data[cursor + id_size]
        cursor += id_size + 1
        raw = [data[cursor + i * step : cursor + (i + 1) * step] for i in range(count)]
        found[item] = [int.from_bytes(r, "big") & (0x7FFF if wide else 0x7F) for r in raw]
        cursor += count * step
    return found


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
                    data, size = self._read_body(response, b"", stop)
                    more = size is None and self._more(response, data)
                if more:  # the first response is closed: a worker never holds two connections
                    data, size = self._read_on(client, response.url, data, stop)
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
            if size is None:
                raise ProbeError(f"the first {len(data):,} bytes hold {_unreadable(data)}")
            return size
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

    def _read_body(
        self, response: httpx.Response, data: bytes, stop: float
    ) -> tuple[bytes, tuple[int, int] | None]:
        """Read (and decode, bounded) until the header shows a size, the cap, or the deadline."""
        decoder = _Decoder(response.headers.get("content-encoding", ""))
        raw_total = 0
        for raw in response.iter_raw():
            raw_total += len(raw)
            data += decoder.decode(raw, self.max_bytes - len(data))
            size = image_size(data)
            if size:
                return data, size
            if len(data) >= self.max_bytes or raw_total >= self.max_bytes:
                break
            if time.monotonic() >= stop:
                raise self._late(stop)
        return data, None

    def _more(self, response: httpx.Response, data: bytes) -> bool:
        """Whether a server that honoured the range holds bytes past it (and the cap allows)."""
        if response.status_code != 206 or len(data) >= self.max_bytes:
            return False
        if response.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
            return False
        sent = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if sent is None:  # no Content-Range: more may follow if the body filled the range
            return len(data) == HEADER_CHUNK
        if int(sent["end"]) + 1 != len(data):
            return False
        return sent["total"] is None or int(sent["total"]) > len(data)

    def _read_on(
        self, client: httpx.Client, url: httpx.URL, data: bytes, stop: float
    ) -> tuple[bytes, tuple[int, int] | None]:
        """Ask for the bytes after `data`, up to the cap: a header past the first range (a large
        EXIF block, a HEIF meta box, a TIFF directory) is read with one more request."""
        headers = {
            "Range": f"bytes={len(data)}-{self.max_bytes - 1}",
            "Accept-Encoding": "identity",
        }
        with client.stream("GET", url, headers=headers, timeout=self._timeout(stop)) as response:
            sent = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if response.status_code != 206 or (sent and int(sent["start"]) != len(data)):
                return data, None
            if response.headers.get("content-encoding", "").strip().lower() not in ("", "identity"):
                return data, None
            return self._read_body(response, data, stop)


def _unreadable(data: bytes) -> str:
    """What the bytes hold instead of a size, for the report."""
    if not data:
        return "no image data"
    if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        (offset,) = struct.unpack("<I" if data[:2] == b"II" else ">I", data[4:8])
        if offset >= len(data):
            return f"a TIFF header whose first directory (with the size) starts at byte {offset:,}"
    if _svg_tag(data):
        return "an SVG whose <svg> tag gives no width and height in absolute units nor a viewBox"
    return f"not a {FORMATS} header"


_CONTENT_RANGE = re.compile(r"bytes (?P<start>\d+)-(?P<end>\d+)/(?:(?P<total>\d+)|\*)$")
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
