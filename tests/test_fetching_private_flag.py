"""What IMGBATCH_ALLOW_PRIVATE_URLS opens, and what stays shut: pure functions, no traffic.

The flag opens loopback, private and CGNAT addresses on any port. Link-local
addresses and cloud metadata services stay refused unless an
IMGBATCH_ALLOWED_HOSTS entry names them, and public addresses keep the port
list. Refusals of link-local and metadata addresses are tested here as pure
functions only (a fake resolver, no socket); the start-up refusal of a webhook
URL is tested with loopback URLs through the real command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from imgbatch.errors import ImageFailure
from imgbatch.fetching import AddressPolicy, check_address, check_url, metadata_service
from imgbatch.fetching.client import resolve_checked
from support.service import free_port

FLAG = AddressPolicy(allow_private=True)
STRICT = AddressPolicy()


def refusal(ip: str, host: str = "h.test", policy: AddressPolicy = FLAG, port: int = 80) -> str:
    with pytest.raises(ImageFailure) as info:
        check_address(ip_address(ip), host, policy, port)
    assert info.value.code == "blocked_address"
    return info.value.message


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "fd12:3456::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_the_flag_opens_loopback_private_and_cgnat_on_any_port(ip: str) -> None:
    check_address(ip_address(ip), "h.test", FLAG, 9000)
    refusal(ip, policy=STRICT)  # and without the flag they are refused


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("169.254.1.1", "link_local"),
        ("169.254.0.1", "link_local"),
        ("fe80::1", "link_local"),
        ("fe80::a9fe:a9fe", "link_local"),
        ("::ffff:169.254.1.1", "link_local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_the_flag_keeps_link_local_and_other_special_ranges_refused(ip: str, reason: str) -> None:
    assert refusal(ip) == (
        f"h.test ({ip_address(ip)}) is not a public address ({reason}) "
        "(IMGBATCH_ALLOW_PRIVATE_URLS opens loopback, private and CGNAT only)"
    )


@pytest.mark.parametrize(
    ("ip", "reason", "service"),
    [
        ("169.254.169.254", "link_local", "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean"),
        ("169.254.170.2", "link_local", "AWS ECS task metadata"),
        ("100.100.100.200", "cgnat", "Alibaba Cloud"),  # inside a range the flag opens
        ("192.0.0.192", "reserved", "Oracle Cloud (legacy)"),
        ("fd00:ec2::254", "private", "AWS (IPv6)"),  # inside a range the flag opens
        (
            "::ffff:169.254.169.254",
            "link_local",
            "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean",
        ),
        ("::ffff:100.100.100.200", "cgnat", "Alibaba Cloud"),
        ("64:ff9b::a9fe:a9fe", "link_local", "AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean"),
    ],
)
def test_metadata_addresses_stay_refused_with_the_flag(ip: str, reason: str, service: str) -> None:
    assert metadata_service(ip_address(ip)) == service
    expected = (
        f"metadata.test ({ip_address(ip)}) is not a public address ({reason}: the cloud metadata service "
        f"of {service}); only an IMGBATCH_ALLOWED_HOSTS entry naming it opens it"
    )
    assert refusal(ip, "metadata.test") == expected
    assert refusal(ip, "metadata.test", STRICT) == expected


@pytest.mark.parametrize(
    ("ip", "entry"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("fe80::1", "fe80::/10"),
        ("fd00:ec2::254", "fd00:ec2::254"),
        ("169.254.169.254", "metadata.google.internal"),
    ],
)
def test_an_allowed_hosts_entry_naming_them_opens_them(ip: str, entry: str) -> None:
    policy = AddressPolicy(allow_private=True, allowed_hosts=(entry,))
    check_address(ip_address(ip), "metadata.google.internal", policy, 8080)
    without_flag = AddressPolicy(allowed_hosts=(entry,))
    check_address(ip_address(ip), "metadata.google.internal", without_flag, 8080)


@pytest.mark.parametrize(
    ("ip", "entry"),
    [
        ("100.100.100.200", "100.64.0.0/10"),  # CGNAT, as Tailscale users allow it
        ("169.254.169.254", "169.254.0.0/16"),  # link-local opened, its metadata address not
        ("fd00:ec2::254", "fd00::/8"),
    ],
)
def test_a_range_entry_does_not_open_a_metadata_address_inside_it(ip: str, entry: str) -> None:
    for flag in (True, False):
        policy = AddressPolicy(allow_private=flag, allowed_hosts=(entry,))
        assert "metadata service" in refusal(ip, policy=policy)


def test_the_flag_keeps_the_port_list_for_public_addresses() -> None:
    check_url("http://images.example:6379/", FLAG)  # undecided until resolved
    assert refusal("93.184.216.34", "images.example", FLAG, 6379) == (
        "port 6379 is not allowed on images.example (93.184.216.34)"
    )
    check_address(ip_address("93.184.216.34"), "images.example", FLAG, 443)
    with pytest.raises(ImageFailure, match="port 6379 is not allowed"):
        check_url("http://93.184.216.34:6379/", FLAG)  # an IP literal is decided at once
    assert check_url("http://127.0.0.1:6379/", FLAG).port == 6379
    assert check_url("http://[::1]:9000/", FLAG).port == 9000


def test_a_name_resolving_to_metadata_is_refused_before_any_connection() -> None:
    """resolve_checked with a fake resolver: pure, no socket is opened."""
    target = check_url("http://metadata.google.internal/computeMetadata/v1/", FLAG)
    with pytest.raises(ImageFailure) as info:
        resolve_checked(target, FLAG, lambda host, port: ["169.254.169.254"])
    assert "cloud metadata service" in info.value.message
    rebinding = lambda host, port: ["127.0.0.1", "169.254.169.254"]  # noqa: E731
    with pytest.raises(ImageFailure):
        resolve_checked(target, FLAG, rebinding)


# --- IMGBATCH_WEBHOOK_URL checked at start ------------------------------------------------


def start(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["--port", str(free_port()), "--workers", "0"] if command == "serve" else []
    return subprocess.run(
        [sys.executable, "-m", "imgbatch", command, *args],
        env={**os.environ, "IMGBATCH_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "why"),
    [
        (
            {"IMGBATCH_WEBHOOK_URL": "http://127.0.0.1:8080/hook?token=s3cret"},
            "port 8080 is not allowed",
        ),
        (
            {"IMGBATCH_WEBHOOK_URL": "http://127.0.0.1/hook?token=s3cret"},
            "127.0.0.1 is not a public address (loopback)",
        ),
        ({"WEBHOOK_URL": "ftp://127.0.0.1/hook?token=s3cret"}, "unsupported URL scheme 'ftp'"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_refused_webhook_url_stops_the_start_with_one_line(
    tmp_path: Path, command: str, env: dict[str, str], why: str
) -> None:
    result = start(tmp_path, command, IMGBATCH_ALLOW_PRIVATE_URLS="false", **env)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert output.splitlines() == [output], output
    assert output.startswith("imgbatch: configuration error: IMGBATCH_WEBHOOK_URL: ")
    assert why in output
    assert "s3cret" not in output  # the path and query may hold a token


def test_the_webhook_check_uses_the_same_policy_as_deliveries(tmp_path: Path) -> None:
    """With the flag, a loopback receiver is fine: the worker starts (and is stopped)."""
    from support.service import Service

    svc = Service(tmp_path / "data", env={"IMGBATCH_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    with svc:
        svc.start(workers=0)
        assert svc.api is not None and svc.api.poll() is None
