"""The one HTTP client for strangers' URLs: address guard, pinned pools, deadlines, typed failures.

Holds: `addresses` (pure: URL parsing and address classification, the SSRF rules),
`client` (`Fetcher`: resolve once, connect to the checked address, check every redirect, cap
bytes and time), `hosts` (per-host download slots and cool-downs shared by a machine's
processes), `pools` (connection pools pinned to checked addresses), `deadline` (a
watchdog for whole-download deadlines) and `failures` (HTTP and transport errors → the image's
typed failure codes).
May import: urllib3, the pure core, `imgbatch.errors`/`imgbatch.config`. Never the ledger,
queue, storage or anything above.
"""

from __future__ import annotations

from .addresses import (
    METADATA_ADDRESSES,
    OPENED_BY_ALLOW_PRIVATE,
    AddressPolicy,
    check_address,
    check_url,
    host_matches,
    is_forbidden_address,
    metadata_service,
    parse_host_ip,
    parse_target,
    url_key,
)
from .client import Fetcher, FetchLimits, check_webhook_url
from .hosts import HostBoard, HostState

__all__ = [
    "METADATA_ADDRESSES",
    "OPENED_BY_ALLOW_PRIVATE",
    "AddressPolicy",
    "FetchLimits",
    "Fetcher",
    "HostBoard",
    "HostState",
    "check_address",
    "check_url",
    "check_webhook_url",
    "host_matches",
    "is_forbidden_address",
    "metadata_service",
    "parse_host_ip",
    "parse_target",
    "url_key",
]
