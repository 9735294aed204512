"""Which addresses imports may reach: the node's guard against server-side request forgery.

An import makes the node fetch URLs a REST client chose, and redirects (from
those URLs, from the Hub) can point anywhere. Unless ``http.allow_private_networks``
is set, the node connects only to public addresses: not to loopback, private
(RFC 1918, ``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud metadata
service, ``fe80::/10``), shared CGNAT (``100.64.0.0/10``), multicast, unspecified,
documentation, benchmarking or otherwise reserved ranges (for IPv6, anything
outside the global unicast ``2000::/3``). IPv6 forms that carry
an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) are judged by the IPv4 address inside.

This module is sans-IO: :func:`blocked_range` classifies one address,
:class:`AddressGuard` applies the policy to hosts and resolved addresses. The
connection-time check (resolve once, connect only to the addresses checked) is
:mod:`streamer._storage.guardnet`'s.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

from .._errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_KEY = "http.allow_private_networks"
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: (network, what it is), first match wins; checked after unwrapping embedded IPv4.
BLOCKED_RANGES: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # with the broadcast address 255.255.255.255
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("::/8", "reserved"),  # IPv4-compatible (deprecated) and other reserved forms
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("3fff::/20", "reserved (documentation)"),
        ("5f00::/16", "reserved (segment routing)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local, deprecated)"),
        ("ff00::/8", "multicast"),
        # IPv6 unicast reachable on the internet is 2000::/3; the rest is unassigned
        ("::/3", "reserved (outside 2000::/3)"),
        ("4000::/2", "reserved (outside 2000::/3)"),
        ("8000::/1", "reserved (outside 2000::/3)"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddress(BadRequest):
    """The node refuses to connect there: a non-public address (see the module docstring)."""

    code = "blocked_address"


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def blocked_range(address: IPAddress | str) -> str | None:
    """What kind of non-public address ``address`` is (``"loopback"``, ``"private"``...;
    for an IPv6 form of an IPv4 address, the IPv4 address's kind), or ``None`` for a
    public one. Raises ``ValueError`` for a string that is no address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return blocked_range(inner)
    for network, what in BLOCKED_RANGES:
        if ip.version == network.version and ip in network:
            return what
    return None


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one, in any form a resolver takes literally
    (``127.0.0.1``, ``::1``, and the legacy IPv4 forms ``127.1``, ``0x7f000001``,
    ``2130706433``); ``None`` for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_localhost(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a name below it (RFC 6761: always loopback)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _refusal(host: str, port: int, why: str) -> BlockedAddress:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return BlockedAddress(
        f"refusing to connect to {where}: {why}; imports reach only public addresses "
        f"unless {ALLOW_KEY} is set"
    )


@dataclass(frozen=True, slots=True)
class AddressGuard:
    """The policy: everything when ``allow_private``, else public addresses only, except
    ``trusted`` ``(host, port)`` pairs (the configured Hub endpoint) reached by name."""

    allow_private: bool = False
    trusted: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def of(cls, *, allow_private: bool, trusted_urls: tuple[str, ...] = ()) -> AddressGuard:
        """The guard trusting the host and port of each of ``trusted_urls``."""
        return cls(allow_private, frozenset(origin(url) for url in trusted_urls))

    def active_for(self, host: str, port: int) -> bool:
        """Whether connections to ``host:port`` are checked at all."""
        return not self.allow_private and (host.lower(), port) not in self.trusted

    def check_url(self, url: str) -> None:
        """Refuse ``url`` now if its host is a blocked literal address or ``localhost``
        (names are checked when connecting, once resolved). Raises :class:`BlockedAddress`."""
        host, port = origin(url)
        if not self.active_for(host, port):
            return
        if is_localhost(host):
            raise _refusal(host, port, "localhost is a loopback name")
        address = literal_address(host)
        what = None if address is None else blocked_range(address)
        if what is not None:
            raise _refusal(host, port, f"{address} is a {what} address")

    def allowed(self, host: str, port: int, addresses: list[str]) -> list[str]:
        """The ``addresses`` ``host`` resolved to that may be connected to, in order;
        raises :class:`BlockedAddress` when none may."""
        if not self.active_for(host, port):
            return addresses
        allowed = [a for a in addresses if blocked_range(a) is None]
        if not allowed:
            found = ", ".join(f"{a} ({blocked_range(a)})" for a in addresses)
            raise _refusal(host, port, f"{host} resolves only to non-public addresses: {found}")
        return allowed


def origin(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``url`` as a connection sees them: the host lowercased,
    IDNA-encoded and without brackets, the port defaulted from the scheme."""
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii").lower()
    return host, parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
