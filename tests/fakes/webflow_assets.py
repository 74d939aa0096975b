"""The fake Webflow's assets: the Assets API's answers, an S3-like presigned upload endpoint and
an asset CDN (a second server on 127.0.0.1), and Image fields re-hosted as `{fileId, url, alt}`.

Sources (../shared/reference/apis.md, "Corrections and additions"):
- `POST /sites/{site_id}/assets` with `{fileName (< 100 chars), fileHash (MD5 hex),
  parentFolder?}` returns `uploadUrl` and `uploadDetails` (a presigned S3 POST) plus the asset's
  `id` and `hostedUrl` (openapi/v2.yml, assets; scope assets:write).
- Image fields are copied into Webflow's CDN from a public URL, at most 4 MB, and read back as
  `{fileId, url, alt}` (reference/field-types-item-values); an invalid or unreachable file is
  skipped unless `skipInvalidFiles=false`, which fails the request (openapi/v2.yml).
- Whether `<img src>` in RichText is re-hosted is unconfirmed: the fake does not (`rehost_body`
  switches it on, the other answer, so a test can run under both).

The fake fetches only URLs on 127.0.0.1 / localhost (the tests' own servers); any other URL is
kept as sent, since the tests have no network.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.base import JsonHandler, ThreadedServer

IMAGE_LIMIT = 4 * 1024 * 1024  # Image fields: at most 4 MB (field-types-item-values)
# The upload's own limit is not in the sources; the fake applies the Image limit (unconfirmed).
UPLOAD_LIMIT = IMAGE_LIMIT
SECRET = b"fake-s3-policy-secret"
LOCAL = {"127.0.0.1", "localhost", "::1"}


class AssetState:
    """Assets of the site, the files uploaded to the fake S3, and what was re-hosted."""

    def __init__(self, site_id: str, rehost_body: bool = False) -> None:
        self.site_id = site_id
        self.rehost_body = rehost_body  # the open question, the other way (see the module doc)
        self.lock = threading.Lock()
        self.requests: list[tuple[float, str, str, int]] = []  # the CDN/S3 server's own log
        self.assets: dict[str, dict[str, Any]] = {}  # id -> asset
        self.pending: dict[str, dict[str, Any]] = {}  # upload key -> asset not uploaded yet
        self.files: dict[str, tuple[bytes, str]] = {}  # key -> (bytes, content type)
        self.uploads: Counter[str] = Counter()  # MD5 -> uploads of those bytes
        self.rehosted: list[str] = []  # source URLs an Image field was copied from
        self.host: AssetHost | None = None

    @property
    def cdn(self) -> str:
        assert self.host is not None
        return self.host.base_url

    # --- the Assets API (answered by the fake Webflow's handler) -----------------------------

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name, digest = str(body.get("fileName") or ""), str(body.get("fileHash") or "")
        if not name or len(name) >= 100:
            return 400, _invalid("fileName", "Required, fewer than 100 characters")
        if not re.fullmatch(r"[0-9a-f]{32}", digest):
            return 400, _invalid("fileHash", "An MD5 hash, in hex")
        asset_id = uuid.uuid4().hex[:24]
        key = f"{self.site_id}/{asset_id}_{name}"
        now = _now()
        asset = {"id": asset_id, "contentType": _content_type(name), "size": None,
                 "siteId": self.site_id, "hostedUrl": f"{self.cdn}/{key}",
                 "originalFileName": name, "displayName": name, "lastUpdated": now,
                 "createdOn": now, "variants": [], "altText": None, "fileHash": digest}  # fmt: skip
        details = {"acl": "public-read", "bucket": "webflow-prod-assets", "key": key,
                   "Policy": "e30=", "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                   "X-Amz-Signature": _sign(key), "success_action_status": "201",
                   "content-type": asset["contentType"], "Cache-Control": "max-age=31536000"}  # fmt: skip
        with self.lock:
            self.pending[key] = asset
        return 202, {**asset, "uploadUrl": f"{self.cdn}/upload", "uploadDetails": details,
                     "assetUrl": asset["hostedUrl"], "parentFolder": body.get("parentFolder")}  # fmt: skip

    def listing(self, query: dict[str, str]) -> dict[str, Any]:
        offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 100)), 100)
        with self.lock:
            assets = list(self.assets.values())
        return {"assets": assets[offset : offset + limit],
                "pagination": {"offset": offset, "limit": limit, "total": len(assets)}}  # fmt: skip

    def upload(self, fields: dict[str, str], data: bytes, content_type: str) -> tuple[int, str]:
        """The presigned POST: the key must be one the API handed out, its signature its own."""
        key = fields.get("key", "")
        with self.lock:
            asset = self.pending.get(key)
        if asset is None or not hmac.compare_digest(fields.get("X-Amz-Signature", ""), _sign(key)):
            return 403, "<Error><Code>AccessDenied</Code></Error>"
        if len(data) > UPLOAD_LIMIT:
            return 400, "<Error><Code>EntityTooLarge</Code></Error>"
        digest = hashlib.md5(data).hexdigest()
        if digest != asset["fileHash"]:  # the asset was announced with another file's hash
            return 400, "<Error><Code>BadDigest</Code></Error>"
        with self.lock:
            del self.pending[key]
            self.files[key] = (data, fields.get("content-type") or content_type)
            self.assets[asset["id"]] = {**asset, "size": len(data)}
            self.uploads[digest] += 1
        return 201, f"<PostResponse><Key>{key}</Key></PostResponse>"

    def served(self, key: str) -> tuple[bytes, str] | None:
        with self.lock:
            return self.files.get(key)

    # --- Image fields: copied into the CDN from their URL ------------------------------------

    def rehost(self, value: Any) -> tuple[Any, str | None]:
        """(the value as Webflow keeps it, why the file is invalid or None)."""
        if not isinstance(value, dict) or not value.get("url"):
            return value, None
        url = str(value["url"])
        if urlsplit(url).hostname not in LOCAL:
            return value, None  # no network here: a public URL is kept as sent
        fetched = fetch(url)
        if isinstance(fetched, str):
            return value, fetched
        data, kind = fetched
        if len(data) > IMAGE_LIMIT:
            return value, f"File is larger than 4 MB ({len(data):,} bytes)"
        asset_id = uuid.uuid4().hex[:24]
        name = urlsplit(url).path.rsplit("/", 1)[-1] or "image"
        key = f"{self.site_id}/{asset_id}_{name}"
        with self.lock:
            self.files[key] = (data, kind)
            self.rehosted.append(url)
        return {"fileId": asset_id, "url": f"{self.cdn}/{key}", "alt": value.get("alt")}, None

    def rehost_html(self, markup: str) -> str:
        """The other answer to the open question: every local `<img src>` copied to the CDN."""
        if not self.rehost_body:
            return markup

        def one(match: re.Match[str]) -> str:
            kept, why = self.rehost({"url": match.group(2)})
            return match.group(0) if why else f"{match.group(1)}{kept['url']}{match.group(3)}"

        return re.sub(r'(<img\b[^>]*\bsrc=")([^"]+)(")', one, markup)


def fetch(url: str, timeout: float = 5.0) -> tuple[bytes, str] | str:
    """The file at a local URL, or why it is invalid (unreachable, an error answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - local only
            return answer.read(IMAGE_LIMIT * 4), answer.headers.get("Content-Type", "image/png")
    except urllib.error.HTTPError as exc:
        return f"File could not be fetched: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"File could not be fetched: {exc}"


class _AssetHandler(JsonHandler):
    """The S3-like upload (`POST /upload`, multipart form) and the CDN (`GET /<key>`)."""

    state: AssetState

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if method == "POST" and path == "/upload":
            self._upload()
            return
        found = self.state.served(path.lstrip("/")) if method == "GET" else None
        if found is None:  # S3 behind a CDN answers a missing key 403 AccessDenied
            self._reply(method, 403, b"<Error><Code>AccessDenied</Code></Error>",
                        content_type="application/xml")  # fmt: skip
            return
        self._reply(method, 200, found[0], content_type=found[1])

    def _upload(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + raw)
        fields: dict[str, str] = {}
        data, kind = b"", "application/octet-stream"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if name == "file":
                data, kind = payload, part.get_content_type()
            elif name:
                fields[str(name)] = payload.decode()
        status, text = self.state.upload(fields, data, kind)
        self._reply("POST", status, text.encode(), content_type="application/xml")


class AssetHost(ThreadedServer):
    def __init__(self, state: AssetState) -> None:
        super().__init__(_AssetHandler, state)
        state.host = self


def route(handler: Any, method: str, path: str, query: dict[str, str], body: Any) -> bool:
    """The fake Webflow's asset routes; True if this answered."""
    assets: AssetState | None = getattr(handler.state, "assets", None)
    if assets is None or not path.startswith(f"/v2/sites/{assets.site_id}/assets"):
        return False
    if method == "POST" and path == f"/v2/sites/{assets.site_id}/assets":
        status, payload = assets.create(body if isinstance(body, dict) else {})
        handler._send(status, payload, method)
        return True
    if method == "GET" and path == f"/v2/sites/{assets.site_id}/assets":
        handler._send(200, assets.listing(query), method)
        return True
    return False


def _invalid(param: str, description: str) -> dict[str, Any]:
    return {"code": "validation_error", "message": "Validation Error", "externalReference": None,
            "details": [{"param": param, "description": description}]}  # fmt: skip


def _sign(key: str) -> str:
    return hmac.new(SECRET, key.encode(), hashlib.sha256).hexdigest()


def _content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
            "svg": "image/svg+xml"}.get(ext, "image/png")  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
