"""Webflow's Assets API with httpx: images fetched through the network guard, uploaded once per
content hash, and the dry-run's look at each image (fetchable, under 4 MB or re-encodable).

`POST /sites/{site_id}/assets` with `{fileName, fileHash}` (MD5 hex) answers `uploadUrl` and
`uploadDetails`, a presigned S3 POST, with the asset's `id` and `hostedUrl` (openapi/v2.yml;
apis.md, "Corrections and additions", Assets API). An asset's file name starts with its hash
(batchgate/webflow_assets.py `file_name`), so the site's listing (`GET /sites/{id}/assets`)
tells a later run what is there already: an image is never uploaded twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from batchgate.errors import FatalError, PermanentError, RetryableError, WriteError
from batchgate.netguard import SETTING, BlockedHost, ResolveTimeout, guarded_client
from batchgate.webflow_assets import (
    IMAGE_LIMIT,
    FitError,
    Fitted,
    digest_of,
    file_name,
    fit,
    mb,
    md5,
    shown_url,
)

MAX_IMAGE_BYTES = 64 * 1024 * 1024  # an image bigger than this is not fetched whole
MAX_REDIRECTS = 5
Request = Callable[..., httpx.Response]  # the destination's paced, error-mapped request


class Unreachable(RetryableError):
    """The image's host could not be reached (no address, refused, no answer in time)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    content_type: str


class ImageFetcher:
    """GETs an image named by item data through the network guard (redirects by hand)."""

    def __init__(self, allow_private_hosts: bool, timeout: float = 30.0) -> None:
        self._client = guarded_client(allow_private_hosts, timeout, 8)

    def get(self, url: str) -> Fetched:
        return self._follow(url, lambda response: _answer(url, response))

    def size(self, url: str) -> int | None:
        """The image's size as its answer's Content-Length states (the body is not read);
        None when the server does not say."""

        def stated(response: httpx.Response) -> int | None:
            if response.status_code >= 400:
                _answer(url, response)  # raises the fetch's own error
            length = response.headers.get("content-length", "")
            return int(length) if length.isdigit() else None

        return self._follow(url, stated, stream=True)

    def _follow(self, url: str, read: Callable[[httpx.Response], Any], stream: bool = False) -> Any:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                if stream:
                    with self._client.stream("GET", current) as response:
                        if not _redirect(response):
                            return read(response)
                else:
                    response = self._client.get(current)
            except BlockedHost as exc:
                raise PermanentError(f"image {shown_url(url)} was not fetched: {exc}; item URLs may "
                                     f"not reach private addresses unless {SETTING}",
                                     error_type="validation") from None  # fmt: skip
            except (httpx.TimeoutException, ResolveTimeout):
                raise Unreachable(f"image {shown_url(url)}: {urlsplit(current).netloc} did not answer in time",
                                  error_type="timeout") from None  # fmt: skip
            except httpx.ConnectError as exc:
                raise Unreachable(f"image {shown_url(url)}: {urlsplit(current).netloc} could not be reached "
                                  f"({type(exc).__name__}: {exc})", error_type="api-error") from None  # fmt: skip
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise RetryableError(f"image {shown_url(url)} could not be fetched "
                                     f"({type(exc).__name__})", error_type="api-error") from None  # fmt: skip
            if _redirect(response):
                current = str(response.url.join(response.headers["location"]))
                continue
            return read(response)
        raise PermanentError(f"image {shown_url(url)}: more than {MAX_REDIRECTS} redirects",
                             error_type="validation")  # fmt: skip

    def close(self) -> None:
        self._client.close()


def _redirect(response: httpx.Response) -> bool:
    return response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers


def _answer(url: str, response: httpx.Response) -> Fetched:
    status = response.status_code
    if status >= 500:
        raise RetryableError(f"image {shown_url(url)}: HTTP {status}", status_code=status,
                             error_type="api-error")  # fmt: skip
    if status >= 400:  # an expired Notion URL answers 403 (S3: "Request has expired")
        raise PermanentError(
            f"image {shown_url(url)} cannot be fetched: HTTP {status} (an expired or removed file); "
            "the item is not written without it", status_code=status, error_type="validation",
        )  # fmt: skip
    if len(response.content) > MAX_IMAGE_BYTES:
        raise PermanentError(f"image {shown_url(url)} is over {mb(MAX_IMAGE_BYTES)}",
                             error_type="validation")  # fmt: skip
    kind = response.headers.get("content-type", "application/octet-stream").split(";")[0]
    return Fetched(response.content, kind.strip())


@dataclass
class AssetStore:
    """The site's assets by content hash: read once from the listing, then what this run uploads.

    `hosted(url)` fetches the image, re-encodes it if it is over 4 MB and the job allows it, and
    returns the hosted URL, uploading only a hash not seen before (one upload per hash, even when
    several writers meet the same image at once)."""

    request: Request
    site_id: Callable[[], str]
    fetcher: ImageFetcher
    fit_limit: bool = False
    fitted: dict[str, str] = field(
        default_factory=dict
    )  # url shown -> "re-encoded from ... to ..."
    uploads: int = 0
    _known: dict[str, str] | None = None  # hash prefix -> hostedUrl
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hash_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _s3: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60.0))

    def fitted_url(self, url: str) -> str:
        """An Image field's URL: as it is when its answer says it is under 4 MB (Webflow copies
        it itself), else the hosted URL of the image re-encoded to fit (see `hosted`)."""
        stated = self.fetcher.size(url)
        if stated is not None and stated <= IMAGE_LIMIT:
            return url
        return self.hosted(url)

    def hosted(self, url: str) -> str:
        fetched = self.fetcher.get(url)
        data, kind = fetched.data, fetched.content_type
        if len(data) > IMAGE_LIMIT:
            fitted = self._fit(url, data)
            data, kind = fitted.data, fitted.content_type
        digest = md5(data)
        with self._lock:
            lock = self._hash_locks.setdefault(digest, threading.Lock())
        with lock:
            known = self._listing().get(digest[:12])
            if known is not None:
                return known
            hosted = self._upload(url, data, kind, digest)
            with self._lock:
                assert self._known is not None
                self._known[digest[:12]] = hosted
            return hosted

    def _fit(self, url: str, data: bytes) -> Fitted:
        if not self.fit_limit:
            raise PermanentError(
                f"image {shown_url(url)} is {mb(len(data))}, over Webflow's 4 MB limit. Fix: set "
                "destination.images: {fit_limit: true} to re-encode it, or re-export it smaller",
                error_type="validation",
            )  # fmt: skip
        try:
            fitted = fit(data)
        except FitError as exc:
            raise PermanentError(f"image {shown_url(url)} is {mb(len(data))} and cannot be "
                                 f"re-encoded under 4 MB: {exc}", error_type="validation") from None  # fmt: skip
        with self._lock:
            self.fitted[shown_url(url)] = fitted.describe(url)
        return fitted

    def _listing(self) -> dict[str, str]:
        """The site's assets (one listing per run), by the hash their file name starts with."""
        with self._lock:
            if self._known is not None:
                return self._known
        found: dict[str, str] = {}
        offset = 0
        while True:
            answer = self.request("GET", f"/sites/{self.site_id()}/assets",
                                  params={"offset": offset, "limit": 100}).json()  # fmt: skip
            assets = [a for a in answer.get("assets") or [] if isinstance(a, dict)]
            for asset in assets:
                digest = digest_of(
                    str(asset.get("originalFileName") or asset.get("displayName") or "")
                )
                if digest and asset.get("hostedUrl"):
                    found.setdefault(digest, str(asset["hostedUrl"]))
            total = (answer.get("pagination") or {}).get("total")
            offset += len(assets)
            if not assets or total is None or offset >= int(total):
                break
        with self._lock:
            if self._known is None:
                self._known = found
            return self._known

    def _upload(self, url: str, data: bytes, kind: str, digest: str) -> str:
        name = _with_extension(file_name(url, digest, kind), kind)
        asset = self.request("POST", f"/sites/{self.site_id()}/assets",
                             json={"fileName": name, "fileHash": digest}).json()  # fmt: skip
        details = {str(k): str(v) for k, v in (asset.get("uploadDetails") or {}).items()}
        try:
            answer = self._s3.post(str(asset["uploadUrl"]), data=details,
                                   files={"file": (name, data, kind)})  # fmt: skip
        except httpx.HTTPError as exc:
            raise RetryableError(f"uploading {name} to Webflow's assets failed "
                                 f"({type(exc).__name__})", error_type="api-error") from None  # fmt: skip
        except KeyError:
            raise PermanentError("Webflow's asset answer has no uploadUrl",
                                 error_type="api-error") from None  # fmt: skip
        if answer.status_code >= 300:
            kind_ = RetryableError if answer.status_code >= 500 else PermanentError
            raise kind_(f"uploading {name} to Webflow's assets: HTTP {answer.status_code}",
                        status_code=answer.status_code, error_type="api-error")  # fmt: skip
        with self._lock:
            self.uploads += 1
        return str(asset.get("hostedUrl") or asset.get("assetUrl"))

    def close(self) -> None:
        self._s3.close()
        self.fetcher.close()


def _with_extension(name: str, kind: str) -> str:
    """A re-encoded image's name ends as its new type does."""
    wanted = {"image/jpeg": ".jpg", "image/png": ".png"}.get(kind)
    if wanted is None or name.lower().endswith((wanted, ".jpeg" if wanted == ".jpg" else wanted)):
        return name
    return name.rsplit(".", 1)[0] + wanted


@dataclass
class ImageCheck:
    """The dry-run's look at the images a record would send: each fetched (concurrently, once
    per URL), over 4 MB blocked with its fix, or re-encoded to see it fits when fit_limit is on."""

    fetcher: ImageFetcher
    fit_limit: bool = False
    notes: list[str] = field(default_factory=list)  # re-encodings, for the report
    _seen: dict[str, tuple[str, str, str] | None] = field(default_factory=dict)
    # a host that could not be reached is not tried again for every image on it (a dry-run of
    # thousands of pages whose covers sit on one unreachable host costs one attempt)
    _down: dict[str, Unreachable] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def problems(self, images: list[tuple[str, str, bool]]) -> list[tuple[str, str, str]]:
        """(field, message, fix) for each image of (field, url, report_unfetchable)."""
        todo = [(f, u, r) for f, u, r in images if u not in self._seen]
        if todo:
            with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
                found = list(pool.map(lambda one: self._look(*one), todo))
            with self._lock:
                self._seen.update((u, p) for (_, u, _), p in zip(todo, found, strict=True))
        return [p for _, u, _ in images if (p := self._seen.get(u)) is not None]

    def _look(self, where: str, url: str, unfetchable: bool) -> tuple[str, str, str] | None:
        host = urlsplit(url).netloc
        try:
            with self._lock:
                down = self._down.get(host)
            if down is not None:
                raise Unreachable(f"its host {host} could not be reached (as for an earlier image)",
                                  error_type=down.error_type)  # fmt: skip
            stated = self.fetcher.size(url)
            if stated is not None and stated <= IMAGE_LIMIT:
                return None  # under the limit: the body need not be read
            data = self.fetcher.get(url).data
        except WriteError as exc:
            if isinstance(exc, Unreachable):
                with self._lock:
                    self._down.setdefault(host, exc)
            if not unfetchable:
                return None  # the hero's own rule says it (hero_aspect_ratio)
            return (where, f"Body image {shown_url(url)} cannot be fetched: {exc.message}",
                    f"Make the image reachable over HTTP(S) (a Notion file URL expires after an "
                    f"hour: run the dry-run again), or remove it; a private host needs "
                    f"{SETTING}: true.")  # fmt: skip
        if len(data) <= IMAGE_LIMIT:
            return None
        if not self.fit_limit:
            return (where, f"Image {shown_url(url)} is {mb(len(data))}, over Webflow's 4 MB limit "
                    "(Webflow would drop it)",
                    "Set destination.images: {fit_limit: true} in the job file to re-encode it "
                    "to fit, or re-export the image under 4 MB.")  # fmt: skip
        try:
            fitted = fit(data)
        except FitError as exc:
            return (where, f"Image {shown_url(url)} is {mb(len(data))} and cannot be re-encoded "
                    f"under 4 MB: {exc}", "Re-export the image under 4 MB.")  # fmt: skip
        with self._lock:
            self.notes.append(f"Image (will be) {fitted.describe(url)}.")
        return None


def require_site(site: dict[str, Any] | None, collection_id: str) -> str:
    if not site or not site.get("id"):
        raise FatalError(
            f"the Webflow site of collection {collection_id} could not be read, so body images "
            "cannot be uploaded to its assets. Fix: give the token sites:read and assets:write.",
            error_type="auth",
        )  # fmt: skip
    return str(site["id"])
