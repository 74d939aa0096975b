"""Where URLs from item data may lead: public addresses only, unless the job allows private ones.

An item's URL (a hero image, a Notion cover) makes the worker send a request. Without this guard a
row could make it probe loopback, the private network or a cloud metadata service, and read the
answers back in the report. The check runs when the connection is opened, on every address the
name resolves to, and the connection goes to the address that was checked (so a DNS answer that
changes between the check and the connect cannot slip through). Redirects open new connections,
so every hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "network.allow_private_hosts"
_RESOLVER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="batchgate-dns")


class BlockedHost(Exception):
    """A URL from item data leads to an address batchgate does not fetch; the message says which."""


class ResolveTimeout(Exception):
    """The host name did not resolve in time."""


def forbidden_kind(ip: IPAddress) -> str | None:
    """What makes an address off limits to item URLs (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden_kind(ip.ipv4_mapped)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """Every address of a host name (or the literal address itself), within `timeout` seconds."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    lookup = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout)
    except FutureTimeout:
        raise ResolveTimeout(f"{host} did not resolve within {timeout:g} s") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"{host} does not resolve ({exc})") from None
    found = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)
    return list(found)


def checked_addresses(
    host: str, port: int, allow_private: bool, timeout: float | None, exempt: frozenset[str]
) -> list[str]:
    """The addresses to connect to; BlockedHost if any address of `host` is off limits."""
    addresses = resolve(host, port, timeout)
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no address")
    if not allow_private:
        for ip in addresses:
            kind = None if str(ip) in exempt else forbidden_kind(ip)
            if kind:
                shown = host if str(ip) == host.strip("[]") else f"{host} ({ip})"
                raise BlockedHost(f"{shown} is a {kind} address")
    return [str(ip) for ip in addresses]


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, opened only to checked addresses."""

    def __init__(self, allow_private: bool, exempt: frozenset[str]) -> None:
        self.allow_private, self.exempt = allow_private, exempt
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = checked_addresses(host, port, self.allow_private, timeout, self.exempt)
        for address in addresses[:-1]:  # each in turn, as socket.create_connection would
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self, *args: typing.Any, **kwargs: typing.Any
    ) -> httpcore.NetworkStream:
        raise BlockedHost("a Unix socket is not an HTTP(S) URL")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection goes through the guard (no proxies: a proxy
    would resolve the name itself, out of the guard's sight)."""

    def __init__(
        self, allow_private: bool, limits: httpx.Limits, exempt: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(allow_private, exempt),
        )


def guarded_client(
    allow_private: bool, timeout: float, max_connections: int, exempt: frozenset[str] = frozenset()
) -> httpx.Client:
    """An httpx client for URLs from item data: redirects are not followed (the caller follows
    them by hand, a bounded number), and every connection is checked. `exempt` addresses pass
    whatever the setting (a test's own redirecting server)."""
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        transport=GuardedTransport(allow_private, limits, exempt),
        trust_env=False,
    )
