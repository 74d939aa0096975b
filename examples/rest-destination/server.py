"""A small products API on 127.0.0.1, the other end of the example connector (stdlib only).

    GET    /products?sku=A,B     the listed products (each with its version), absent ones left out
    PUT    /products/{sku}       create or replace; If-None-Match: * only creates (else 412),
                                 If-Match: * only replaces (else 412); 422 for a bad value
    DELETE /products/{sku}       204, or 404 when there is none
    GET    /categories, POST /categories {"name": ...}   the categories a product may have

A bearer token is required when one is given (--token or PRODUCTS_TOKEN). Usage:
    python server.py [--port 8765] [--categories Kitchen,Garden,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CATEGORIES = ["Kitchen", "Garden", "Office", "Outdoor", "Toys"]
FIELDS = {"name": str, "price": (int, float), "stock": int, "category": str}


class Shop:
    """What the API holds: products by sku, and the categories it accepts."""

    def __init__(self, categories: list[str], token: str | None = None) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        self.categories = list(categories)
        self.token = token
        self.writes = 0  # PUT and DELETE requests answered, for tests
        self.lock = threading.Lock()

    def problem(self, product: dict[str, Any]) -> str | None:
        """Why the API refuses a product (422), or None."""
        for field, kind in FIELDS.items():
            value = product.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"{field} is missing or not a {getattr(kind, '__name__', 'number')}"
        if product["price"] <= 0 or product["stock"] < 0:
            return "price must be above 0 and stock 0 or more"
        if product["category"] not in self.categories:
            return f"category {product['category']!r} does not exist (add it: POST /categories)"
        return None


def version(product: dict[str, Any]) -> str:
    """The product's version: a hash of its content, so a restore brings the old one back."""
    blob = json.dumps({k: v for k, v in product.items() if k != "version"}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def allowed(self) -> bool:
            if shop.token and self.headers.get("Authorization") != f"Bearer {shop.token}":
                self.answer(401, {"error": "a valid bearer token is required"})
                return False
            return True

        def body(self) -> Any:
            return json.loads(
                self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
            )

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if not self.allowed():
                return
            if url.path == "/categories":
                return self.answer(200, {"categories": shop.categories})
            if url.path != "/products":
                return self.answer(404, {"error": "no such resource"})
            wanted = ",".join(parse_qs(url.query).get("sku", [])).split(",")
            with shop.lock:
                found = (
                    [shop.products[s] for s in wanted if s in shop.products]
                    if any(wanted)
                    else list(shop.products.values())
                )
            self.answer(200, {"products": found})

        def do_POST(self) -> None:  # noqa: N802
            if self.allowed() and urlsplit(self.path).path == "/categories":
                with shop.lock:
                    shop.categories.append(str(self.body().get("name")))
                return self.answer(201, {"categories": shop.categories})
            self.answer(404, {"error": "no such resource"})

        def do_PUT(self) -> None:  # noqa: N802
            sku = self.sku()
            if sku is None or not self.allowed():
                return
            product = {**self.body(), "sku": sku}
            with shop.lock:
                shop.writes += 1
                exists = sku in shop.products
                if (self.headers.get("If-None-Match") == "*" and exists) or (
                    self.headers.get("If-Match") == "*" and not exists
                ):
                    return self.answer(
                        412,
                        {"error": f"product {sku} " + ("exists" if exists else "does not exist")},
                    )
                problem = shop.problem(product)
                if problem:
                    return self.answer(422, {"error": problem, "sku": sku})
                product["version"] = version(product)
                shop.products[sku] = product
            self.answer(200 if exists else 201, product)

        def do_DELETE(self) -> None:  # noqa: N802
            sku = self.sku()
            if sku is None or not self.allowed():
                return
            with shop.lock:
                shop.writes += 1
                gone = shop.products.pop(sku, None) is None
            self.answer(404 if gone else 204, {"error": f"no product {sku}"} if gone else None)

        def sku(self) -> str | None:
            parts = urlsplit(self.path).path.split("/")
            if len(parts) == 3 and parts[1] == "products" and parts[2]:
                return parts[2]
            self.answer(404, {"error": "no such resource"})
            return None

    return Handler


def serve(
    port: int = 0,
    categories: list[str] | None = None,
    token: str | None = None,
) -> tuple[ThreadingHTTPServer, Shop]:
    """The API in a background thread; server.server_address has the port it got."""
    shop = Shop(categories or CATEGORIES, token)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(shop))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--token", default=os.environ.get("PRODUCTS_TOKEN"))
    args = parser.parse_args()
    server, _ = serve(args.port, args.categories.split(","), args.token)
    print(f"products API on http://127.0.0.1:{server.server_address[1]}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
