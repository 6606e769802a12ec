"""Upload options: accepted names and aliases, unknown names refused, conflicts refused."""

from __future__ import annotations

import pytest

from imgbatch.errors import ApiError
from imgbatch.intake import accepted_fields, parse_quality, upload_options

FORM, QUERY = "form field", "query parameter"


@pytest.mark.parametrize(
    "name",
    ["webhook_url", "webhookUrl", "callback_url", "callbackUrl", "WEBHOOK-URL", "Callback_URL"],
)
def test_webhook_url_and_its_aliases(name: str) -> None:
    assert upload_options([(FORM, name, "https://hooks.example/x")]) == {
        "webhook_url": "https://hooks.example/x"
    }


def test_options_from_form_and_query_together() -> None:
    received = [(FORM, "quality", "40"), (QUERY, "format", "webp"), (QUERY, "quality", "40")]
    assert upload_options(received) == {"quality": "40", "format": "webp"}


def test_every_unknown_name_is_refused_at_once() -> None:
    with pytest.raises(ApiError) as info:
        upload_options([(FORM, "quality", "40"), (FORM, "notify", "x"), (QUERY, "qualty", "3")])
    error = info.value
    assert (error.status, error.code) == (400, "unknown_field")
    assert error.message == (
        "unknown form field 'notify', query parameter 'qualty'; accepted fields: "
        "webhook_url (or webhookUrl, callback_url), quality, format, max_width, max_height, "
        "and the CSV as one file part"
    )
    assert [d["field"] for d in error.details] == ["notify", "qualty"]


def test_accepted_fields_lists_aliases() -> None:
    assert (
        accepted_fields()
        == "webhook_url (or webhookUrl, callback_url), quality, format, max_width, max_height"
    )


def test_an_option_with_two_values_is_refused() -> None:
    with pytest.raises(ApiError) as info:
        upload_options([(FORM, "callback_url", "https://a.example"), (QUERY, "webhookUrl", "x")])
    assert (info.value.status, info.value.code) == (400, "conflicting_fields")
    assert info.value.message == (
        "webhook_url was sent as 'callback_url' and as 'webhookUrl' with different values; "
        "send each option once"
    )


def test_nothing_received_is_no_option() -> None:
    assert upload_options([]) == {}


@pytest.mark.parametrize(
    "value", ["+50", "5_0", "\u0665\u0660", " 50.0", "0x32", "-1", "101", "best"]
)
def test_quality_takes_plain_ascii_digits_only(value: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_quality(value, 50)
    assert (info.value.status, info.value.code) == (400, "bad_field")


def test_quality_accepts_its_range_and_auto() -> None:
    assert parse_quality(" 72 ", 50) == 72
    assert parse_quality("AUTO", 50) == "auto"
    assert parse_quality("", 50) == 50
