"""Content-Security-Policies of the dashboard's pages (pure: strings in, strings out).

The pages run only the app's own static scripts and styles (no inline code), talk only to
this origin, and show images from this origin and from where output URLs point (the public
base URL, a public bucket). The before/after view of one image is the one page that may
also show an image from elsewhere: the input's own origin, allowed for that page only, so
the browser fetches an input image only when the user opens that view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# A CSP host-source must not carry anything that could end or extend the directive.
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)$")


def origin_of(url: str | None) -> str | None:
    """`scheme://host[:port]` of an http(s) URL as a CSP source, or None if it is not one."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # urlsplit drops the brackets of an IPv6 literal
        host = f"[{host}]"
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if not _HOST.match(host):
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def page_csp(image_origins: Iterable[str | None] = ()) -> str:
    """The policy of every dashboard page: own scripts and styles, images from the given origins."""
    sources = ["'self'", *dict.fromkeys(o for o in image_origins if o)]
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {' '.join(sources)}; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
