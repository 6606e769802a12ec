"""API keys: with `IMGBATCH_API_KEYS` set, every /api route needs `Authorization: Bearer <key>`.

A request belongs to the key that created it (stored as a SHA-256 digest, never
the key itself); other keys get a 404 for it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imgbatch.errors import ApiError

MAX_AUTH_HEADER = 1024


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [key_digest(k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner_for(self, authorization: str | None) -> str | None:
        """The caller's owner id (key digest); None when auth is off. Raises 401 otherwise."""
        if not self.enabled:
            return None
        if not authorization or len(authorization) > MAX_AUTH_HEADER:
            raise _unauthorized("missing API key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("use Authorization: Bearer <key>")
        digest = key_digest(token.strip())
        matched = False
        for known in self._digests:  # no early exit: constant time over the key list
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise _unauthorized("invalid API key")
        return digest


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


# Declares the bearer scheme in the OpenAPI document (and /docs' "Authorize" button);
# the header itself is checked by `ApiKeys.owner_for`.
_bearer = HTTPBearer(
    auto_error=False, description="An API key; required when the service has IMGBATCH_API_KEYS."
)


def require_owner(
    request: Request,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> str | None:
    """FastAPI dependency: the owner id of the caller (None when the service runs open)."""
    keys: ApiKeys = request.app.state.api_keys
    return keys.owner_for(request.headers.get("authorization"))
