"""Fuzz the HTTP API from its own OpenAPI document (schemathesis) against the real service.

Every operation gets up to `EXAMPLES` generated requests, valid and invalid; the
default checks hold each answer to the document: no 5xx, only documented
statuses and content types, bodies that match their schemas, invalid input
refused, and auth not ignored (the service runs with an API key).

Nothing can leave loopback: the service runs without workers (no image is ever
fetched) and any generated webhook URL is replaced by one that is refused
before resolving anything.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from imgbatch.intake import UPLOAD_FIELDS
from support.service import Service

API_KEY = "fuzz-" + uuid.uuid4().hex
EXAMPLES = 30  # per operation and phase; the whole run takes ~10 s
TIME_BOUND = 120  # seconds, for every operation together
SAFE_WEBHOOK = "http://127.0.0.1:1/hook"  # port 1 is not allowed: refused without a DNS lookup
URL_LIKE = re.compile(r"\s*https?://", re.IGNORECASE)
VALID_CSV = b"S. No.,Product Name,Input Image Urls\r\n1,Shoe,http://127.0.0.1:9/shoe.jpg\r\n"

WEBHOOK_NAMES = ("webhook_url", *UPLOAD_FIELDS["webhook_url"])
OPTION_OF = {name: option for option, names in UPLOAD_FIELDS.items() for name in (option, *names)}

schemathesis.serializer.alias("text/csv", "text/plain")
_turns = itertools.count()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "IMGBATCH_ALLOW_PRIVATE_URLS": "false",
        "IMGBATCH_API_KEYS": API_KEY,
        "IMGBATCH_UPLOAD_RATE_LIMIT": "1000000",
    }
    service = Service(tmp_path_factory.mktemp("fuzz") / "data", env)
    try:
        service.start(workers=0)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def known_request(fuzzed: Service) -> str:
    """A request of the fuzzing key, so that id-taking routes are fuzzed past their 404."""
    status, answer = fuzzed.upload(VALID_CSV, headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 202, answer
    return str(answer["request_id"])


@pytest.fixture(scope="module")
def api_schema(fuzzed: Service) -> Any:
    # Declared as the document's bearer scheme, so schemathesis knows a request without it
    # is meant to be refused (its `ignored_auth` check), rather than added to every call.
    config = SchemathesisConfig.from_str(f'[auth.openapi.HTTPBearer]\nbearer = "{API_KEY}"\n')
    return schemathesis.openapi.from_url(fuzzed.url + "/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy loader reads `Node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _defused(value: Any) -> Any:
    """A webhook URL the service would resolve becomes one it refuses on the spot."""
    if isinstance(value, list):
        return [_defused(item) for item in value]
    if isinstance(value, str) and URL_LIKE.match(value) and len(value.strip()) <= 2048:
        return SAFE_WEBHOOK
    return value


def _prepare(case: Any, known_request: str) -> None:
    """Keep the fuzzing on loopback, and make valid uploads really valid.

    Valid cases drop a generated webhook URL (it is optional, under any of its
    names); in invalid ones a URL-like value is replaced by one refused before
    anything is resolved. The document cannot say what a valid CSV is, so a valid
    body's file is a valid CSV; nor that an option may be sent once only (as a
    query parameter or a form field, under one of its names), so a valid case
    keeps the first. Every other valid request id is swapped for an existing
    request's.
    """
    path = case.path_parameters
    if (
        path
        and "request_id" in path
        and _is_positive(case, ParameterLocation.PATH)
        and next(_turns) % 2
    ):
        path["request_id"] = known_request
    seen: set[str] = set()
    for location, container in (
        (ParameterLocation.BODY, case.body),
        (ParameterLocation.QUERY, case.query),
    ):
        if not isinstance(container, dict):
            continue
        positive = _is_positive(case, location)
        for name in [n for n in container if n in WEBHOOK_NAMES]:
            if positive:
                del container[name]
            else:
                container[name] = _defused(container[name])
        for name in [n for n in container if n in OPTION_OF]:
            if positive and OPTION_OF[name] in seen:
                del container[name]
            seen.add(OPTION_OF[name])
    headers = case.headers
    if headers and "Idempotency-Key" in headers and _is_positive(case, ParameterLocation.HEADER):
        # A valid key the fuzzer repeats with another body is rightly refused (422): keys
        # are the client's to keep unique, so each valid case gets one of its own.
        headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.path == "/api/upload" and _is_positive(case, ParameterLocation.BODY):
        if isinstance(case.body, dict) and "file" in case.body:
            case.body["file"] = VALID_CSV
        elif isinstance(case.body, str):
            case.body = VALID_CSV.decode()


def _is_positive(case: Any, location: ParameterLocation) -> bool:
    if case.meta is None:
        return True
    info = case.meta.components.get(location)
    mode = info.mode if info is not None else case.meta.generation.mode
    return bool(mode == GenerationMode.POSITIVE)


@pytest.mark.timeout(TIME_BOUND)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples on every run: CI failures reproduce
    database=None,
)
def test_api_conforms_to_its_openapi_document(case: Any, known_request: str) -> None:
    _prepare(case, known_request)
    response = case.call_and_validate(timeout=30)
    assert response.status_code < 500
    if case.path.startswith("/api/") and _is_positive(case, ParameterLocation.HEADER):
        assert response.status_code != 401, "the configured key was not sent"
