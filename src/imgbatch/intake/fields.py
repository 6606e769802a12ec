"""The upload's options: which names are accepted, their aliases, and nothing silently dropped.

Clients written for other implementations send `webhookUrl` or `callback_url`;
a field we ignored would mean a receiver that never hears anything. So every
form field and query parameter of an upload is either an accepted option
(under its name or an alias, compared without case, `_` or `-`) or refused
with `400 unknown_field` naming what is accepted; and an option given twice
with different values is refused rather than one value winning unseen.

Pure: the API passes in the (name, value) pairs it received.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from imgbatch.errors import ApiError

# Option → other names it may arrive under. Add a new upload option here (and to
# api.responses' documented fields) or it is refused as unknown.
UPLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook_url": ("webhookUrl", "callback_url"),
    "quality": (),
    "format": (),
    "max_width": (),
    "max_height": (),
}

_NOT_ALNUM = re.compile(r"[\W_]+")


def field_key(name: str) -> str:
    """`webhookUrl`, `Webhook-URL`, `webhook_url` → `webhookurl`."""
    return _NOT_ALNUM.sub("", name).lower()


_OPTION_OF: dict[str, str] = {
    field_key(name): option
    for option, aliases in UPLOAD_FIELDS.items()
    for name in (option, *aliases)
}


def accepted_fields() -> str:
    """The accepted names, for messages: `webhook_url (or webhookUrl, callback_url), quality, …`."""
    return ", ".join(
        f"{option} (or {', '.join(aliases)})" if aliases else option
        for option, aliases in UPLOAD_FIELDS.items()
    )


def upload_options(received: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Map (where, name, value) triples to {option: value}; raise ApiError for the rest.

    `where` is "form field" or "query parameter", for messages. Unknown names →
    `400 unknown_field` (all of them listed); one option with two different
    values → `400 conflicting_fields`.
    """
    options: dict[str, tuple[str, str]] = {}  # option → (value, the name it first came as)
    unknown: list[tuple[str, str]] = []
    conflicts: dict[str, str] = {}  # option → what was wrong
    for where, name, value in received:
        option = _OPTION_OF.get(field_key(name))
        if option is None:
            unknown.append((where, name))
            continue
        first_value, first_name = options.setdefault(option, (value, name))
        if first_value != value and option not in conflicts:
            conflicts[option] = (
                f"{option} was sent as {first_name!r} and as {name!r} with different values"
            )
    if unknown:
        names = ", ".join(f"{where} {name!r}" for where, name in unknown)
        raise ApiError(
            400,
            "unknown_field",
            f"unknown {names}; accepted fields: {accepted_fields()}, and the CSV as one file part",
            [
                {"field": name, "message": f"unknown {where}; accepted: {accepted_fields()}"}
                for where, name in unknown
            ],
        )
    if conflicts:
        raise ApiError(
            400,
            "conflicting_fields",
            "; ".join(conflicts.values()) + "; send each option once",
            [{"field": option, "message": message} for option, message in conflicts.items()],
        )
    return {option: value for option, (value, _name) in options.items()}
