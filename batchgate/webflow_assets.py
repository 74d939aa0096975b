"""Images a Webflow item carries: which body images to re-host, their figure markup, content
hashes, and re-encoding an image over Webflow's 4 MB limit (plain Python, no HTTP).

Webflow copies only Image fields into its CDN (from a public URL, at most 4 MB); an `<img>` in
RichText keeps its `src`, so a Notion-signed body image breaks an hour after the write. Body
images are uploaded through the Assets API instead (`POST /sites/{site_id}/assets`, then the
presigned upload it returns) and the `src` rewritten (apis.md, "Corrections and additions":
Assets API, RichText and images; Webflow's migration skill `wfu-migrate-cms`).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

IMAGE_LIMIT = 4 * 1024 * 1024  # Image fields take at most 4 MB (field-types-item-values, apis.md)
FILE_NAME_MAX = 99  # fileName "< 100 chars" (openapi/v2.yml, assets; apis.md)
HASH_PREFIX = 12  # an asset's file name starts with its MD5: the site's listing shows what it holds
# the figure Webflow's own editor writes: without it an image vanishes in the Designer (apis.md)
FIGURE = ('<figure class="w-richtext-figure-type-image w-richtext-align-fullwidth"><div>'
          '<img src="{src}" alt="{alt}"></div></figure>')  # fmt: skip
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""\b(src|alt)\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_FIGURE_OPEN = re.compile(r"<figure\b[^>]*w-richtext-figure-type-image", re.IGNORECASE)
# query parameters of a signed URL that expires (S3 SigV4 and V2, CloudFront): Notion's files
SIGNED = {"x-amz-signature", "x-amz-expires", "signature", "expires", "x-goog-signature"}


@dataclass(frozen=True, slots=True)
class BodyImage:
    src: str  # as the HTML holds it, unescaped
    alt: str


def body_images(markup: str | None) -> list[BodyImage]:
    """Every `<img>` of a RichText body, in order (a src once)."""
    seen: dict[str, BodyImage] = {}
    for tag in _IMG.findall(markup or ""):
        attrs = {m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or "")
                 for m in _ATTR.finditer(tag)}  # fmt: skip
        src = attrs.get("src", "")
        if src and src not in seen:
            seen[src] = BodyImage(src, attrs.get("alt", ""))
    return list(seen.values())


def expires(url: str) -> bool:
    """A signed URL (a Notion-hosted file): it stops answering after its expiry."""
    return bool(SIGNED & {k.lower() for k in parse_qs(urlsplit(url).query)})


def to_upload(markup: str | None, upload: str) -> list[BodyImage]:
    """The body images to re-host: every one (`all`), else those whose URL expires (`hosted`)."""
    images = body_images(markup)
    return images if upload == "all" else [i for i in images if expires(i.src)]


def rewrite(markup: str, hosted: dict[str, str]) -> str:
    """Each `<img>` whose src is in `hosted` points at its hosted URL, inside Webflow's figure
    markup (a bare `<img>` is wrapped; one already in a figure keeps its figure)."""
    out, last = [], 0
    for match in _IMG.finditer(markup):
        tag = match.group(0)
        attrs = {m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or "")
                 for m in _ATTR.finditer(tag)}  # fmt: skip
        url = hosted.get(attrs.get("src", ""))
        out.append(markup[last : match.start()])
        last = match.end()
        if url is None:
            out.append(tag)
            continue
        src, alt = html.escape(url, quote=True), html.escape(attrs.get("alt", ""), quote=True)
        if _in_figure(markup, match.start()):
            out.append(f'<img src="{src}" alt="{alt}">')
        else:
            out.append(FIGURE.format(src=src, alt=alt))
    out.append(markup[last:])
    return "".join(out)


def _in_figure(markup: str, at: int) -> bool:
    opened = markup.rfind("<figure", 0, at)
    return (
        opened >= 0
        and markup.rfind("</figure>", opened, at) < 0
        and bool(_FIGURE_OPEN.match(markup, opened))
    )


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def file_name(url: str, digest: str, content_type: str | None = None) -> str:
    """The asset's file name: its hash first (so a later run finds it in the site's listing),
    then the URL's own name, under 100 characters."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "image"
    name = re.sub(r"[^\w.\-]+", "-", name).strip("-.") or "image"
    if "." not in name:
        name += _EXTENSIONS.get((content_type or "").split(";")[0].strip().lower(), ".png")
    return f"{digest[:HASH_PREFIX]}-{name}"[:FILE_NAME_MAX]


def digest_of(file_name_: str) -> str | None:
    """The hash prefix an asset's file name starts with (see `file_name`), if it has one."""
    head = file_name_.split("-", 1)[0]
    return head if re.fullmatch(rf"[0-9a-f]{{{HASH_PREFIX}}}", head) else None


_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
               "image/webp": ".webp", "image/svg+xml": ".svg", "image/avif": ".avif"}  # fmt: skip


class FitError(Exception):
    """The image cannot be re-encoded under the limit (not a raster image Pillow reads)."""


@dataclass(frozen=True, slots=True)
class Fitted:
    data: bytes
    content_type: str
    before: int
    after: int

    def describe(self, url: str) -> str:
        saved = 100 * (self.before - self.after) / self.before if self.before else 0.0
        return (f"{shown_url(url)}: re-encoded from {mb(self.before)} to {mb(self.after)} "
                f"(-{saved:.0f}%) to fit Webflow's 4 MB limit")  # fmt: skip


def fit(data: bytes, limit: int = IMAGE_LIMIT) -> Fitted:
    """The image re-encoded under `limit` bytes: JPEG at falling quality (WebP-free, every
    browser shows it), then smaller by a quarter each round; a PNG with transparency stays a
    PNG (optimized, then scaled). Pillow does the encoding."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise FitError("Pillow is not installed (pip install pillow)") from exc
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # Pillow raises many kinds for data it cannot read
        raise FitError(f"not an image Pillow can re-encode ({type(exc).__name__})") from None
    alpha = image.mode in ("RGBA", "LA", "P") and "transparency" in image.info or image.mode in (
        "RGBA", "LA")  # fmt: skip
    for _ in range(12):
        for out, kind in _encodings(image, alpha):
            if len(out) <= limit:
                return Fitted(out, kind, len(data), len(out))
        image = image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)))
    raise FitError(f"still over {mb(limit)} after scaling down")


def _encodings(image: object, alpha: bool) -> list[tuple[bytes, str]]:
    from PIL import Image

    assert isinstance(image, Image.Image)
    if alpha:
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=True)
        return [(buffer.getvalue(), "image/png")]
    rgb = image.convert("RGB")
    found = []
    for quality in (85, 70):
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", quality=quality, optimize=True)
        found.append((buffer.getvalue(), "image/jpeg"))
    return found


def mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def shown_url(url: str) -> str:
    """A URL as a report shows it: without its query (a signature is no one's business)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else url
