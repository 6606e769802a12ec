"""Pure tests of address classification, host notations, host patterns and URL checks.

No traffic: public addresses appear here as values only.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from types import SimpleNamespace

import pytest

from imgbatch.errors import ImageFailure
from imgbatch.fetching import (
    AddressPolicy,
    check_address,
    check_url,
    host_matches,
    is_forbidden_address,
    parse_host_ip,
)


def teredo(server: str, client: str, flags: int = 0x8000, port: int = 0x63BF) -> IPv6Address:
    """A Teredo address (2001::/32) with the client address XOR-ed as RFC 4380 says."""
    value = (0x20010000 << 96) | (int(IPv4Address(server)) << 64) | (flags << 48)
    value |= (port ^ 0xFFFF) << 32 | (int(IPv4Address(client)) ^ 0xFFFFFFFF)
    return IPv6Address(value)


def nat64_local_48(v4: str) -> IPv6Address:
    """RFC 6052 /48 layout inside 64:ff9b:1::/48: v4 split around the zero `u` octet."""
    n = int(IPv4Address(v4))
    value = (int(IPv6Address("64:ff9b:1::")) | ((n >> 16) << 64)) | ((n & 0xFFFF) << 40)
    return IPv6Address(value)


FULLWIDTH_LOOPBACK = "\uff11\uff12\uff17.\uff10.\uff10.\uff11"  # full-width 127.0.0.1

# --- classification ------------------------------------------------------------

FORBIDDEN_V4 = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link_local"),
    ("169.254.169.254", "link_local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "reserved"),
    ("192.168.0.1", "private"),
    ("192.168.255.255", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
]

FORBIDDEN_V6 = [
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fe80::1", "link_local"),
    ("febf:ffff::1", "link_local"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "reserved"),
    ("100::1", "reserved"),
    ("5f00::1", "reserved"),
    ("4000::1", "reserved"),  # outside 2000::/3, unallocated
    ("::1:0:0:1", "reserved"),
    # IPv4-mapped and IPv4-translated
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:100.64.0.1", "cgnat"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:255.255.255.255", "broadcast"),
    ("::ffff:0:127.0.0.1", "loopback"),
    ("::ffff:0:192.168.1.1", "private"),
    # IPv4-compatible (deprecated); public ones are still refused as reserved
    ("::127.0.0.1", "loopback"),
    ("::10.0.0.1", "private"),
    ("::169.254.169.254", "link_local"),
    ("::8.8.8.8", "reserved"),
    # 6to4
    ("2002:7f00:1::", "loopback"),
    ("2002:7f00:1::1", "loopback"),
    ("2002:a9fe:a9fe::1", "link_local"),
    ("2002:c0a8:101::", "private"),
    ("2002:a00:1::", "private"),
    ("2002:6440:1::", "cgnat"),
    # NAT64 well-known and local-use prefixes
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::10.1.2.3", "private"),
    ("64:ff9b::169.254.169.254", "link_local"),
    ("64:ff9b::192.0.2.1", "documentation"),
    ("64:ff9b:1::127.0.0.1", "loopback"),
    ("64:ff9b:1::8.8.8.8", "private"),  # the local-use prefix itself is never public
    (str(nat64_local_48("127.0.0.1")), "private"),
]


@pytest.mark.parametrize(("address", "reason"), FORBIDDEN_V4 + FORBIDDEN_V6)
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert is_forbidden_address(ip_address(address)) == reason


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_teredo_client_is_unxored_and_checked(client: str, reason: str) -> None:
    address = teredo("65.54.227.120", client)
    assert address.teredo == (IPv4Address("65.54.227.120"), IPv4Address(client))
    assert is_forbidden_address(address) == reason


def test_teredo_with_private_server_is_refused() -> None:
    assert is_forbidden_address(teredo("10.0.0.1", "8.8.8.8")) == "private"


def test_the_canonical_teredo_example_hides_loopback() -> None:
    # 80ff:fffe XOR ffff:ffff = 7f00:0001
    assert is_forbidden_address(ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe")) == "loopback"


def test_zone_ids_do_not_change_the_verdict() -> None:
    assert is_forbidden_address(ip_address("fe80::1%eth0")) == "link_local"
    assert is_forbidden_address(ip_address("ff02::1%2")) == "multicast"


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.1",
        "192.167.255.255",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
        str(teredo("65.54.227.120", "8.8.4.4")),
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden_address(ip_address(address)) is None


# --- host notations ---------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "017700000001",
    "0x7f.1",
    "0x7f.0.1",
    "0x7f.0x0.0x0.0x1",
    "0177.0.0.1",
    "0177.1",
    "127.000.000.001",
    "127.1",
    "127.0.1",
    "127.0.0.1.",
    " 127.0.0.1 ",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_ipv4_notations_all_mean_loopback(host: str) -> None:
    assert parse_host_ip(host) == IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("1.256", "1.0.1.0"),
        ("10.0x10000", "10.1.0.0"),
        ("192.168.65535", "192.168.255.255"),
        ("4294967295", "255.255.255.255"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
    ],
)
def test_ipv4_short_and_numeric_forms(host: str, expected: str) -> None:
    assert parse_host_ip(host) == IPv4Address(expected)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("[2606:4700::1111]", "2606:4700::1111"),
    ],
)
def test_ipv6_notations(host: str, expected: str) -> None:
    assert parse_host_ip(host) == IPv6Address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "example.com",
        "localhost",
        "127.0.0.1.example.com",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "4294967296",
        "08.0.0.1",
        "0x1g",
        "1.2.3.-1",
        "1..2",
        "[::1",
        "[not:an:ip]",
        FULLWIDTH_LOOPBACK,  # check_url IDNA-maps it first
    ],
)
def test_non_addresses(host: str) -> None:
    assert parse_host_ip(host) is None


# --- host patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("images.example.com", ["images.example.com"], True),
        ("IMAGES.Example.com.", ["images.example.com"], True),
        ("images.example.com", ["Images.Example.Com."], True),
        ("other.example.com", ["images.example.com"], False),
        ("a.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evilexample.com", ["*.example.com"], False),
        ("example.com.evil.net", ["*.example.com", "example.com"], False),
        ("bücher.example", ["xn--bcher-kva.example"], True),
        ("127.0.0.1", ["127.0.0.1"], True),
        ("0x7f.1", ["127.0.0.1"], True),
        ("127.0.0.5", ["127.0.0.0/8"], True),
        ("127.1", ["127.0.0.0/8"], True),
        ("128.0.0.1", ["127.0.0.0/8"], False),
        ("[::1]", ["::1/128"], True),
        ("::1", ["[::1]"], True),
        ("127.0.0.1", ["*.0.0.1", "localhost"], False),
        ("localhost", ["127.0.0.0/8"], False),
        ("images.example.com", [], False),
    ],
)
def test_host_matches(host: str, patterns: list[str], expected: bool) -> None:
    assert host_matches(host, patterns) is expected


@pytest.mark.parametrize("pattern", ["*", "*.", "foo.*.com", "a b.com", "*.*.com", "http://x"])
def test_invalid_patterns_are_refused_at_startup(pattern: str) -> None:
    with pytest.raises(ValueError):
        AddressPolicy(allowed_hosts=(pattern,))


def test_policy_from_settings() -> None:
    settings = SimpleNamespace(
        allow_private_urls=True,
        allowed_hosts=["*.cdn.test", "10.0.0.0/8"],
        allowed_ports=[80, 8080],
    )
    policy = AddressPolicy.from_settings(settings)
    assert policy == AddressPolicy(True, ("*.cdn.test", "10.0.0.0/8"), (80, 8080))


# --- check_url ---------------------------------------------------------------------------

STRICT = AddressPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "//example.com/a.jpg",
        "example.com/a.jpg",
        "http:///a.jpg",
        "http://",
        "http:example.com/a.jpg",
        "http://user:pass@example.com/a.jpg",
        "http://user@example.com/a.jpg",
        "http://:pass@example.com/a.jpg",
        "http://example.com@127.0.0.1/",
        "http://example.com\\@127.0.0.1/",
        "http://exa mple.com/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:99999/",
        "http://example.com:abc/",
        "http://example.com:+80/",
        "http://example.com:\uff18\uff10/",  # full-width digits
        "http://[::1/",
        "http://::1/",
        "http://[127.0.0.1]/",
        "http://1.2.3.999/",
        "http://example.123/",
        "http://08.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://example..com/",
        "http://exa_mple!.com/",
        "http://example.com/\na.jpg",
        "http://example.com/\x00",
    ],
)
def test_check_url_bad_urls(url: str) -> None:
    with pytest.raises(ImageFailure) as info:
        check_url(url, STRICT)
    assert info.value.code == "bad_url"
    assert "pass" not in info.value.message


def test_check_url_normalizes() -> None:
    target = check_url("  HTTP://Images.Example.COM./a b/é.jpg?x=1&y=ä#frag ", STRICT)
    assert target.scheme == "http"
    assert target.host == "images.example.com"
    assert target.port == 80
    assert target.path == "/a%20b/%C3%A9.jpg?x=1&y=%C3%A4"
    assert not target.is_ip
    assert target.url == "http://images.example.com/a%20b/%C3%A9.jpg?x=1&y=%C3%A4"


def test_check_url_keeps_existing_escapes_and_defaults_path() -> None:
    assert check_url("https://example.com/a%2Fb?q=%20", STRICT).path == "/a%2Fb?q=%20"
    assert check_url("https://example.com", STRICT).path == "/"
    assert check_url("https://example.com?x", STRICT).path == "/?x"


def test_check_url_idna() -> None:
    assert check_url("https://bücher.example/x", STRICT).host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://" + FULLWIDTH_LOOPBACK + "/", "127.0.0.1"),
        ("http://127。0。0。1/", "127.0.0.1"),
        ("https://[::1]/", "::1"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://[fe80::1%25eth0]/", "fe80::1%eth0"),
    ],
)
def test_check_url_canonicalizes_ip_literals(url: str, host: str) -> None:
    target = check_url(url, STRICT)
    assert target.is_ip
    assert target.host == host


def test_check_url_authority() -> None:
    assert check_url("https://[::1]:8443/", AddressPolicy(True)).authority == "[::1]:8443"
    assert check_url("https://example.com:443/", STRICT).authority == "example.com"
    assert check_url("http://example.com:443/", STRICT).authority == "example.com:443"


def test_check_url_ports() -> None:
    with pytest.raises(ImageFailure) as info:
        check_url("http://example.com:6379/", STRICT)
    assert info.value.code == "blocked_address"
    assert "6379" in info.value.message
    assert check_url("http://example.com:6379/", AddressPolicy(allow_private=True)).port == 6379
    allowed = AddressPolicy(allowed_hosts=("example.com",))
    assert check_url("http://example.com:6379/", allowed).port == 6379
    assert check_url("http://example.com:8080/", AddressPolicy(allowed_ports=(8080,))).port == 8080
    assert check_url("https://example.com/", STRICT).port == 443


# --- check_address ------------------------------------------------------------------------


def test_check_address_refuses_private_with_reason() -> None:
    with pytest.raises(ImageFailure) as info:
        check_address(ip_address("169.254.169.254"), "metadata.example", STRICT)
    assert info.value.code == "blocked_address"
    assert "link_local" in info.value.message
    assert "metadata.example" in info.value.message


def test_check_address_exceptions() -> None:
    loopback = ip_address("127.0.0.1")
    check_address(ip_address("93.184.216.34"), "example.com", STRICT)
    check_address(loopback, "anything", AddressPolicy(allow_private=True))
    check_address(loopback, "images.test", AddressPolicy(allowed_hosts=("images.test",)))
    check_address(loopback, "a.cdn.test", AddressPolicy(allowed_hosts=("*.cdn.test",)))
    check_address(loopback, "internal", AddressPolicy(allowed_hosts=("127.0.0.0/8",)))
    with pytest.raises(ImageFailure):
        check_address(loopback, "other.test", AddressPolicy(allowed_hosts=("images.test",)))
    with pytest.raises(ImageFailure):
        check_address(ip_address("10.0.0.1"), "x", AddressPolicy(allowed_hosts=("127.0.0.0/8",)))
