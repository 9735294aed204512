"""The address classifier and the guard's policy (pure functions, no sockets)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from streamer._storage.netguard import BLOCKED_RANGES as TABLE
from streamer._storage.netguard import (
    AddressGuard,
    BlockedAddress,
    blocked_range,
    is_localhost,
    literal_address,
    origin,
)

BLOCKED = {
    # IPv4, first and last address of each range and the famous ones
    "0.0.0.0": "unspecified",
    "0.255.255.255": "unspecified",
    "10.0.0.0": "private",
    "10.255.255.255": "private",
    "100.64.0.0": "shared (carrier-grade NAT)",
    "100.127.255.255": "shared (carrier-grade NAT)",
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "169.254.169.254": "link-local (cloud metadata)",
    "169.254.0.0": "link-local (cloud metadata)",
    "172.16.0.0": "private",
    "172.31.255.255": "private",
    "192.0.0.8": "reserved",
    "192.0.2.1": "reserved (documentation)",
    "192.88.99.1": "reserved",
    "192.168.0.1": "private",
    "192.168.255.255": "private",
    "198.18.0.1": "reserved (benchmarking)",
    "198.19.255.255": "reserved (benchmarking)",
    "198.51.100.7": "reserved (documentation)",
    "203.0.113.9": "reserved (documentation)",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "::2": "reserved",
    "::127.0.0.1": "reserved",  # IPv4-compatible (deprecated)
    "64:ff9b:1::1": "private (local-use NAT64)",
    "100::1": "reserved (discard-only)",
    "2001::1": "reserved (IETF protocol assignments, Teredo)",
    "2001:1ff:ffff::1": "reserved (IETF protocol assignments, Teredo)",
    "2001:db8::1": "reserved (documentation)",
    "3fff::1": "reserved (documentation)",
    "5f00::1": "reserved (segment routing)",
    "fc00::1": "private (unique local)",
    "fdff:ffff::1": "private (unique local)",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",  # scoped, as getaddrinfo gives it
    "febf:ffff::1": "link-local",
    "fec0::1": "private (site-local, deprecated)",
    "ff02::1": "multicast",
    "ff0e::1": "multicast",
    "fee0::1": "private (site-local, deprecated)",
    "fbff:ffff::1": "reserved (outside 2000::/3)",
    "fe7f:ffff::1": "reserved (outside 2000::/3)",
    "1fff::1": "reserved (outside 2000::/3)",
    "4000::1": "reserved (outside 2000::/3)",
    "8000::1": "reserved (outside 2000::/3)",
    # IPv6 forms of IPv4 addresses: the IPv4 address's kind
    "::ffff:127.0.0.1": "loopback",
    "::ffff:7f00:1": "loopback",
    "::ffff:169.254.169.254": "link-local (cloud metadata)",
    "::ffff:10.1.2.3": "private",
    "::ffff:0.0.0.0": "unspecified",
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local (cloud metadata)",
    "2002:7f00:1::1": "loopback",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::": "private",  # 6to4 of 192.168.1.1
}

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.88.98.255",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2001:200::1",
    "2a00:1450:4001::1",
    "2c0f:fb50::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "3ffe:ffff::1",
]


@pytest.mark.parametrize(("address", "kind"), BLOCKED.items())
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    what = blocked_range(address)
    assert what is not None and what.startswith(kind), (address, what)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_range(address) is None
    assert blocked_range(ipaddress.ip_address(address.split("%")[0])) is None


def _neighbours(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[int]:
    low, high = int(network.network_address), int(network.broadcast_address)
    top = 2**network.max_prefixlen - 1
    return [n for n in (low - 1, high + 1) if 0 <= n <= top]


def _in_table(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip.version == net.version and ip in net for net, _ in TABLE)


@pytest.mark.parametrize(("network", "kind"), TABLE, ids=[str(n) for n, _ in TABLE])
def test_every_range_is_blocked_to_its_edges_and_no_further(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, kind: str
) -> None:
    cls = type(network.network_address)
    for edge in (network.network_address, network.broadcast_address):
        assert blocked_range(edge) is not None, edge
    for n in _neighbours(network):
        outside = cls(n)
        if not _in_table(outside) and not (
            isinstance(outside, ipaddress.IPv6Address)
            and (outside.ipv4_mapped or outside.sixtofour or outside in TABLE_NAT64)
        ):
            assert blocked_range(outside) is None, outside


TABLE_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_ALSO_BLOCKED_V4 = [ipaddress.IPv4Network(n) for n in ("192.0.0.0/24", "192.88.99.0/24")]


def test_ipv4_agrees_with_the_standard_library_on_a_large_sample() -> None:
    """An independent oracle: Python's ``is_global``, plus multicast and the two
    special /24s the standard library counts as global."""
    rng = random.Random(1234)
    sample = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20_000)]
    sample += [ipaddress.IPv4Address(a << 24) for a in range(256)]
    for ip in sample:
        expected_blocked = (
            not ip.is_global or ip.is_multicast or any(ip in n for n in _ALSO_BLOCKED_V4)
        )
        assert (blocked_range(ip) is not None) == expected_blocked, ip
        mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
        assert blocked_range(mapped) == blocked_range(ip), mapped


def test_ipv6_only_global_unicast_passes_on_a_large_sample() -> None:
    rng = random.Random(4321)
    named = [net for net, _ in TABLE if net.version == 6 and net.prefixlen > 3]
    for _ in range(20_000):
        ip = ipaddress.IPv6Address(rng.getrandbits(128))
        global_unicast = ip in ipaddress.IPv6Network("2000::/3")
        special = any(ip in n for n in named) or ip.sixtofour is not None
        if global_unicast and not special:
            assert blocked_range(ip) is None, ip
        elif not global_unicast:
            assert blocked_range(ip) is not None, ip


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("1", "0.0.0.1"),
        ("example.com", None),
        ("beef.cafe", None),
        ("a1", None),
        ("", None),
    ],
)
def test_literal_addresses_in_every_form_a_resolver_takes(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (None if found is None else str(found)) == address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("api.localhost", True),
        ("localhost.example.com", False),
        ("notlocalhost", False),
    ],
)
def test_localhost_names(host: str, expected: bool) -> None:
    assert is_localhost(host) is expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x",
        "https://192.168.0.10/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://localhost:9000/x",
        "http://api.localhost/x",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_check_url_refuses_blocked_literals_and_localhost(url: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        AddressGuard().check_url(url)
    assert caught.value.code == "blocked_address" and caught.value.status_code == 400
    assert "http.allow_private_networks" in caught.value.message
    AddressGuard(allow_private=True).check_url(url)  # allowed when configured


@pytest.mark.parametrize(
    "url", ["https://example.com/x", "http://8.8.8.8/x", "http://[2606:4700::1]/x", "http://a1/"]
)
def test_check_url_lets_public_literals_and_names_through(url: str) -> None:
    AddressGuard().check_url(url)  # names are checked once resolved, at connection time


def test_trusted_origins_are_exempt_by_host_and_port() -> None:
    guard = AddressGuard.of(allow_private=False, trusted_urls=("http://127.0.0.1:7000/hub",))
    guard.check_url("http://127.0.0.1:7000/anything")
    assert guard.allowed("127.0.0.1", 7000, ["127.0.0.1"]) == ["127.0.0.1"]
    for url in ("http://127.0.0.1:7001/x", "http://localhost:7000/x"):
        with pytest.raises(BlockedAddress):
            guard.check_url(url)
    with pytest.raises(BlockedAddress):
        guard.allowed("localhost", 7000, ["127.0.0.1"])


def test_allowed_keeps_the_public_addresses_in_order_and_names_the_refused() -> None:
    guard = AddressGuard()
    assert guard.allowed("h", 80, ["10.0.0.1", "8.8.8.8", "::1", "1.1.1.1"]) == [
        "8.8.8.8",
        "1.1.1.1",
    ]
    with pytest.raises(BlockedAddress) as caught:
        guard.allowed("localhost", 80, ["127.0.0.1", "::1"])
    message = caught.value.message
    assert "localhost:80" in message and "127.0.0.1 (loopback)" in message
    assert "::1 (loopback)" in message
    assert AddressGuard(allow_private=True).allowed("h", 80, ["::1"]) == ["::1"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://HuggingFace.co", ("huggingface.co", 443)),
        ("http://hub.internal/base/", ("hub.internal", 80)),
        ("http://[::1]:8080/x", ("::1", 8080)),
        ("http://bücher.example/", ("xn--bcher-kva.example", 80)),
    ],
)
def test_origin_is_what_a_connection_sees(url: str, expected: tuple[str, int]) -> None:
    assert origin(url) == expected
