"""Which network destinations imgbatch may talk to: pure checks, no I/O.

Image URLs come from strangers' CSV files and webhook URLs from clients, so every
outgoing connection is a potential SSRF. The rule (after imgproxy's `privatenet`):
parse the URL strictly, resolve the host once, refuse if *any* resolved address is
not public, and connect only to an address checked here. This module holds the
parsing and the classification; `imgbatch.fetching.client` does the resolving and connecting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from imgbatch.errors import ImageFailure

IPAddress = IPv4Address | IPv6Address

# IANA special-purpose registries, written out rather than taken from
# `ipaddress.is_private`, whose tables differ between Python patch releases.
# First match wins, so narrower ranges come before the ranges containing them.
_V4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),  # "this network"; Linux connects 0.0.0.0 to localhost
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link_local"),  # includes the 169.254.169.254 metadata service
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("100::/64", "reserved"),  # discard-only
        ("2001:2::/48", "benchmarking"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "reserved"),  # IETF protocol assignments (ORCHID, ...)
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved"),  # SRv6 SIDs
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link_local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("ff00::/8", "multicast"),
    )
)
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")

_MAPPED = IPv6Network("::ffff:0:0/96")
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # RFC 2765 "IPv4-translated"
_COMPAT = IPv6Network("::/96")  # deprecated "IPv4-compatible"
_NAT64_WKP = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_UNSPECIFIED_OR_LOOPBACK = IPv6Network("::/127")
_TEREDO = IPv6Network("2001::/32")
_6TO4 = IPv6Network("2002::/16")


def _low32(ip: IPv6Address) -> IPv4Address:
    return IPv4Address(int(ip) & 0xFFFFFFFF)


def _classify_v4(ip: IPv4Address) -> str | None:
    for net, reason in _V4_RANGES:
        if ip in net:
            return reason
    return None


def _embedded_v4(ip: IPv6Address) -> tuple[list[IPv4Address], str | None] | None:
    """IPv4 addresses an IPv6 address carries, and the verdict when they are all public.

    Returns None when `ip` is not one of the embedding forms. A router or the
    kernel may deliver such a packet to the embedded IPv4 host, so that host is
    what must be checked.
    """
    if ip in _MAPPED or ip in _TRANSLATED:
        return [_low32(ip)], None
    if ip in _COMPAT:  # :: and ::1 excluded by the caller
        return [_low32(ip)], "reserved"
    if ip in _NAT64_WKP:
        return [_low32(ip)], None
    if ip in _NAT64_LOCAL:
        # Local-use prefix (RFC 8215): never public, whatever it embeds. The low
        # 32 bits are checked only to name the reason when they hold an address.
        inner = _low32(ip)
        return ([] if int(inner) >> 24 == 0 else [inner]), "private"
    if ip in _TEREDO:
        teredo = ip.teredo
        assert teredo is not None
        server, client = teredo  # `client` is already un-XOR-ed by ipaddress
        return [client, server], None
    if ip in _6TO4:
        sixtofour = ip.sixtofour
        assert sixtofour is not None
        return [sixtofour], None
    return None


# What IMGBATCH_ALLOW_PRIVATE_URLS opens (demos, internal image hosts): these address
# ranges, on any port. Link-local (169.254.0.0/16, fe80::/10), the cloud metadata
# services below, and every other special range stay refused; only an
# IMGBATCH_ALLOWED_HOSTS entry covering them opens them.
OPENED_BY_ALLOW_PRIVATE = frozenset({"loopback", "private", "cgnat"})

# Cloud instance-metadata endpoints: a request to one can hand out the machine's
# credentials. Some sit outside link-local, so they are listed, not inferred.
METADATA_ADDRESSES: dict[IPAddress, str] = {
    IPv4Address("169.254.169.254"): "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean",
    IPv4Address("169.254.170.2"): "AWS ECS task metadata",
    IPv4Address("100.100.100.200"): "Alibaba Cloud",
    IPv4Address("192.0.0.192"): "Oracle Cloud (legacy)",
    IPv6Address("fd00:ec2::254"): "AWS (IPv6)",
}


def metadata_service(ip: IPAddress) -> str | None:
    """Whose metadata service `ip` is (also hidden in an IPv6 form), or None."""
    if isinstance(ip, IPv6Address):
        ip = IPv6Address(int(ip))  # no zone id
        embedded = _embedded_v4(ip) if ip not in _UNSPECIFIED_OR_LOOPBACK else None
        for inner in embedded[0] if embedded else []:
            if inner in METADATA_ADDRESSES:
                return METADATA_ADDRESSES[inner]
    return METADATA_ADDRESSES.get(ip)


def is_forbidden_address(ip: IPAddress) -> str | None:
    """Why `ip` must not be contacted ("loopback", "private", ...), or None if it is public.

    IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, Teredo,
    6to4) are judged by the embedded address, so `::ffff:127.0.0.1` is loopback.
    """
    if isinstance(ip, IPv4Address):
        return _classify_v4(ip)
    ip = IPv6Address(int(ip))  # drop any zone id: it does not change the range
    if ip not in _UNSPECIFIED_OR_LOOPBACK:
        embedded = _embedded_v4(ip)
        if embedded is not None:
            addresses, verdict = embedded
            for inner in addresses:
                reason = _classify_v4(inner)
                if reason is not None:
                    return reason
            return verdict
    for net, reason in _V6_RANGES:
        if ip in net:
            return reason
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"  # unallocated outside 2000::/3
    return None


# --- host notations ----------------------------------------------------------

_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*\Z")
_OCT_PART = re.compile(r"0[0-7]+\Z")
_DEC_PART = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def _ipv4_number(part: str) -> int | None:
    if _HEX_PART.match(part):
        return int(part[2:] or "0", 16)
    if _OCT_PART.match(part):
        return int(part, 8)
    if _DEC_PART.match(part):
        return int(part)
    return None


def _ends_in_number(host: str) -> bool:
    """WHATWG URL "ends in a number": such a host is an IPv4 address or invalid."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    return (last != "" and last.isascii() and last.isdigit()) or bool(_HEX_PART.match(last))


def _parse_ipv4(host: str) -> IPv4Address | None:
    """inet_aton / WHATWG IPv4: 1-4 parts, each decimal, octal (0...) or hex (0x...)."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # browsers accept one trailing dot
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values: list[int] = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return IPv4Address(value)


def parse_host_ip(host: str) -> IPAddress | None:
    """The IP address `host` denotes in any notation libc or a browser accepts, else None.

    `2130706433`, `0x7f000001`, `0x7f.1`, `0177.0.0.1`, `127.1` all mean
    127.0.0.1; treating them as names would let them past the address check
    and into `getaddrinfo`, which parses them as numbers again.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        host = unquote(host)  # RFC 6874 zone ids arrive as %25
        try:
            return IPv6Address(host)
        except ValueError:
            return None
    if not host or not host.isascii():
        return None
    return _parse_ipv4(host)


# --- allowed-host patterns ------------------------------------------------------

_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\Z")


def normalize_hostname(host: str) -> str:
    """Lower-case ASCII (IDNA) form of a DNS name, without a trailing dot.

    Raises ValueError for anything that is not a plausible DNS name.
    """
    name = host.strip()
    if name.endswith("."):
        name = name[:-1]
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"invalid host name {host!r}") from exc
    if len(name) > 253 or not _HOSTNAME.match(name):
        raise ValueError(f"invalid host name {host!r}")
    return name


def _pattern_network(pattern: str) -> IPv4Network | IPv6Network | None:
    try:
        return ip_network(pattern.strip("[]"), strict=False)
    except ValueError:
        return None


def validate_host_pattern(pattern: str) -> None:
    """Raise ValueError unless `pattern` is a name, `*.name`, an IP or a CIDR."""
    if _pattern_network(pattern) is not None:
        return
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if "*" in name:
        raise ValueError(f"unsupported allowed-host pattern {pattern!r}")
    normalize_hostname(name)


def _ip_matches(ip: IPAddress, patterns: Sequence[str]) -> bool:
    plain = IPv6Address(int(ip)) if isinstance(ip, IPv6Address) else ip  # no zone id
    for pattern in patterns:
        network = _pattern_network(pattern)
        if network is not None and plain.version == network.version and plain in network:
            return True
    return False


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether `host` is covered by IMGBATCH_ALLOWED_HOSTS `patterns`.

    Patterns are exact names (`images.example.com`), wildcards (`*.example.com`
    matches any subdomain, not the apex), IP literals and CIDR blocks. A host
    that is an IP literal matches only IP and CIDR patterns.
    """
    ip = parse_host_ip(host)
    if ip is not None:
        return _ip_matches(ip, patterns)
    try:
        name = normalize_hostname(host)
    except ValueError:
        return False
    for pattern in patterns:
        if _pattern_network(pattern) is not None:
            continue
        try:
            if pattern.startswith("*."):
                if name.endswith("." + normalize_hostname(pattern[2:])):
                    return True
            elif name == normalize_hostname(pattern):
                return True
        except ValueError:
            continue
    return False


# --- policy and checks -----------------------------------------------------------------


@dataclass(frozen=True)
class AddressPolicy:
    """Where outgoing requests may go.

    `allow_private` opens loopback, private and CGNAT addresses
    (`OPENED_BY_ALLOW_PRIVATE`) on any port, for demos and internal image hosts;
    public addresses keep `allowed_ports`, and link-local and cloud metadata
    addresses stay refused. A host matching `allowed_hosts` (by name, or by
    IP/CIDR pattern for its address) may reach any address and any port.
    """

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = (80, 443)

    def __post_init__(self) -> None:
        for pattern in self.allowed_hosts:
            validate_host_pattern(pattern)

    @classmethod
    def from_settings(cls, settings: Any) -> AddressPolicy:
        """Build from `Settings` (allow_private_urls, allowed_hosts, allowed_ports)."""
        return cls(
            allow_private=bool(settings.allow_private_urls),
            allowed_hosts=tuple(settings.allowed_hosts),
            allowed_ports=tuple(int(port) for port in settings.allowed_ports),
        )

    def host_allowed(self, host: str) -> bool:
        return bool(self.allowed_hosts) and host_matches(host, self.allowed_hosts)


@dataclass(frozen=True)
class ParsedTarget:
    """A checked http(s) URL, split into what a connection needs.

    `host` is the ASCII (IDNA) name, or the canonical text of the IP for IP
    literals in any notation; `path` is the percent-encoded path plus query.
    """

    scheme: str
    host: str
    port: int
    path: str
    is_ip: bool

    @property
    def authority(self) -> str:
        """The Host header value: port omitted when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"

    @property
    def origin(self) -> str:
        """`scheme://host:port`: the image host that per-host limits and cool-downs count."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3986 reserved + unreserved characters and `%`: kept as they are; the rest
# (spaces inside, non-ASCII) is percent-encoded the way a browser would.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


def _bad_url(message: str) -> ImageFailure:
    return ImageFailure("bad_url", message)


def _split_authority(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _bad_url("unterminated IPv6 address in URL")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad_url("garbage after IPv6 address in URL")
        return host, rest[1:] if rest else None
    if netloc.count(":") > 1:
        raise _bad_url("IPv6 address in URL must be in brackets")
    host, colon, port = netloc.partition(":")
    return host, port if colon else None


def _normalize_host(raw: str) -> tuple[str, bool]:
    if raw.startswith("["):
        ip = parse_host_ip(raw)
        if not isinstance(ip, IPv6Address):
            raise _bad_url("invalid IPv6 address in URL")
        return str(ip), True
    if "%" in raw:
        raise _bad_url("percent-encoded host names are not accepted")
    try:
        ascii_host = raw.encode("idna").decode("ascii").lower() if raw else ""
    except UnicodeError:
        raise _bad_url("invalid host name in URL") from None
    if not ascii_host:
        raise _bad_url("URL has no host")
    ip = parse_host_ip(ascii_host)
    if ip is not None:
        return str(ip), True
    if _ends_in_number(ascii_host):
        raise _bad_url("invalid IPv4 address in URL")
    try:
        return normalize_hostname(ascii_host), False
    except ValueError:
        raise _bad_url("invalid host name in URL") from None


def parse_target(url: str) -> ParsedTarget:
    """Parse an http(s) URL strictly into what a connection needs; no policy applied.

    Raises ImageFailure `bad_url`: not http(s), no host, credentials, malformed
    host or port. The fragment is dropped (it is never sent).
    """
    url = url.strip()
    if _CONTROL_CHARS.search(url):
        raise _bad_url("URL contains control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _bad_url("malformed URL") from None
    if " " in parts.netloc or "\\" in parts.netloc:
        raise _bad_url("URL host contains spaces or backslashes")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _bad_url(f"unsupported URL scheme {scheme or '(none)'!r}; only http and https")
    if "@" in parts.netloc:
        raise _bad_url("URLs with credentials (user@host) are not accepted")
    raw_host, raw_port = _split_authority(parts.netloc)
    host, is_ip = _normalize_host(raw_host)
    if raw_port:
        if not (raw_port.isascii() and raw_port.isdigit()) or not 0 < int(raw_port) < 65536:
            raise _bad_url("invalid port in URL")
        port = int(raw_port)
    else:
        port = 443 if scheme == "https" else 80
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return ParsedTarget(scheme=scheme, host=host, port=port, path=path, is_ip=is_ip)


def url_key(url: str) -> str:
    """The URL as it is fetched: two URLs with one key get the same bytes from the same GET.

    Scheme and host in lower case (IDNA), IP literals in canonical form, the
    default port dropped, path and query percent-encoded as they are sent, the
    fragment dropped. A URL that cannot be parsed is its own key.
    """
    try:
        return parse_target(url).url
    except ImageFailure:
        return url.strip()


def check_url(url: str, policy: AddressPolicy) -> ParsedTarget:
    """Parse an http(s) URL strictly; raise ImageFailure if it may not be fetched.

    `bad_url`: see `parse_target`. `blocked_address`: a port outside
    `policy.allowed_ports`. The host's addresses are checked later, by
    `check_address`, once resolved.
    """
    target = parse_target(url)
    host, port = target.host, target.port
    if not (port in policy.allowed_ports or policy.host_allowed(host)):
        ip = parse_host_ip(host) if target.is_ip else None
        # With allow_private a name may still resolve to an opened address, where any port
        # is fine: `check_address` decides once the address is known.
        if not (policy.allow_private and (ip is None or _opened_by_flag(ip))):
            raise ImageFailure("blocked_address", f"port {port} is not allowed")
    return target


def _opened_by_flag(ip: IPAddress) -> bool:
    return is_forbidden_address(ip) in OPENED_BY_ALLOW_PRIVATE and metadata_service(ip) is None


def _names_exactly(ip: IPAddress, host: str, patterns: Sequence[str]) -> bool:
    """Whether an entry names this very address, or the host by name: a range that merely
    contains a metadata address (100.64.0.0/10 holds Alibaba's) never opens it."""
    if parse_host_ip(host) is None and host_matches(host, patterns):
        return True
    single = [
        p for p in patterns if (n := _pattern_network(p)) is not None and n.num_addresses == 1
    ]
    return _ip_matches(ip, single)


def check_address(ip: IPAddress, host: str, policy: AddressPolicy, port: int | None = None) -> None:
    """Raise ImageFailure("blocked_address") if `host` may not be reached at `ip` (and `port`).

    `port` is checked here only when `check_url` could not decide it: with
    `allow_private`, a port outside `allowed_ports` is fine on an opened
    address and refused on a public one.
    """
    service = metadata_service(ip)
    if service is None:
        if policy.host_allowed(host) or _ip_matches(ip, policy.allowed_hosts):
            return
    elif _names_exactly(ip, host, policy.allowed_hosts):
        return
    shown = host if host == str(ip) else f"{host} ({ip})"
    reason = is_forbidden_address(ip)
    if service is not None:
        raise ImageFailure(
            "blocked_address",
            f"{shown} is not a public address ({reason}: the cloud metadata service of "
            f"{service}); only an IMGBATCH_ALLOWED_HOSTS entry naming it opens it",
        )
    if reason is None:
        if port is not None and port not in policy.allowed_ports:
            raise ImageFailure("blocked_address", f"port {port} is not allowed on {shown}")
        return
    if policy.allow_private and reason in OPENED_BY_ALLOW_PRIVATE:
        return
    opened = " (IMGBATCH_ALLOW_PRIVATE_URLS opens loopback, private and CGNAT only)"
    raise ImageFailure(
        "blocked_address",
        f"{shown} is not a public address ({reason})" + (opened if policy.allow_private else ""),
    )
