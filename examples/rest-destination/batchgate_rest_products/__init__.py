"""A batchgate destination for the example products API (server.py): products keyed by sku."""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

import httpx

from batchgate.connectors import Capabilities, DestinationBase
from batchgate.destinations import WriteResult
from batchgate.errors import AlreadyExists, FatalError, PermanentError, RetryableError, WriteError

# HTTP status -> the failure it is; any other 5xx is retried, any other 4xx is the item's
STATUS = {401: FatalError, 403: FatalError, 412: AlreadyExists, 429: RetryableError}


class Products(DestinationBase):
    """PUT /products/{sku}; the API keeps each product's version, so a rollback is safe."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        snapshots=True, versions=True, restore=True, group_size=50, idempotent_upsert=True
    )

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=auth, timeout=timeout_s)

    @property
    def key(self) -> str:
        return f"rest-products:{self.base_url}"

    def find_many(self, keys: list[str]) -> dict[str, str]:
        return {sku: sku for sku in self._listed(keys)}

    def versions(self, skus: list[str]) -> dict[str, str | None]:
        listed = self._listed(skus)
        return {sku: listed[sku]["version"] if sku in listed else None for sku in skus}

    def snapshot_many(self, skus: list[str]) -> dict[str, dict[str, Any] | None]:
        listed = self._listed(skus)
        return {sku: _fields(listed[sku]) if sku in listed else None for sku in skus}

    def upsert_many(self, entries: list[Any], draft: bool) -> list[WriteResult | WriteError]:
        # a create never overwrites a product batchgate did not write (412: AlreadyExists)
        return [
            self._put(self.record_key(r), r, {"If-None-Match": "*"} if d is None else {})
            for r, d, _ in entries
        ]

    def restore_many(self, entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        # If-Match: a product deleted since is not made again (None: nothing restored)
        out: dict[str, Any] = {}
        for sku, snapshot in entries:
            answer = self._put(sku, snapshot, {"If-Match": "*"})
            out[sku] = answer if isinstance(answer, WriteError) else answer.version
            if isinstance(answer, AlreadyExists):
                out[sku] = None
        return out

    def delete_many(self, skus: list[str]) -> dict[str, WriteError]:
        answers = {sku: self._send("DELETE", f"/products/{sku}") for sku in skus}
        return {
            sku: a
            for sku, a in answers.items()
            if isinstance(a, WriteError) and a.status_code != 404
        }

    def _put(self, sku: str, record: dict[str, Any], headers: dict[str, str]) -> Any:
        answer = self._send("PUT", f"/products/{sku}", json=_fields(record), headers=headers)
        if isinstance(answer, WriteError):
            return answer
        body = _json(answer)
        if not isinstance(body, dict) or not body.get("version"):
            # it may have landed: retried, the look-up finds it and the PUT is an update
            return RetryableError(f"PUT /products/{sku}: HTTP {answer.status_code} without a version")
        action = "created" if answer.status_code == 201 else "updated"
        return WriteResult(sku, action, version=str(body["version"]))

    def _listed(self, skus: list[str]) -> dict[str, dict[str, Any]]:
        """The products of a group (at most group_size skus), in one request."""
        if not skus:
            return {}
        answer = self._send("GET", "/products", params={"sku": ",".join(skus)})
        if isinstance(answer, WriteError):
            raise answer
        listed = _json(answer)
        if not isinstance(listed, dict) or not isinstance(listed.get("products"), list):
            raise RetryableError("GET /products: the answer is not a product listing")
        return {p["sku"]: p for p in listed["products"] if isinstance(p, dict) and "sku" in p}

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response | WriteError:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:  # no answer in time: the writer tries again
            return RetryableError(f"{method} {path}: no answer in time", error_type="timeout")
        except httpx.HTTPError as exc:  # not reached: the writer tries again
            return RetryableError(f"{method} {path}: {type(exc).__name__}", error_type="api-error")
        if answer.is_success:
            return answer
        status = answer.status_code
        kind = STATUS.get(status, RetryableError if status >= 500 else PermanentError)
        error = _json(answer)
        reason = error.get("error", "") if isinstance(error, dict) else ""
        return kind(f"{method} {path}: HTTP {status} {str(reason)[:200]}".rstrip(),
                    status_code=status, error_type="validation" if status == 422 else None)

    def close(self) -> None:
        self._http.close()


def _json(answer: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (a proxy's HTML page, a cut body)."""
    try:
        return answer.json()
    except ValueError:
        return None


def _fields(product: dict[str, Any]) -> dict[str, Any]:
    """What the API stores of a record or a listed product: JSON values, no sku or version."""
    return {
        k: v.isoformat() if isinstance(v, date) else v
        for k, v in product.items()
        if k not in ("sku", "version") and not k.startswith("_")
    }
