"""Bearer API keys: each request's key is hashed and compared in constant time to the configured hashes."""

from __future__ import annotations

import hmac

from flask import g, request

from shared.errors import Unauthorized
from shared.settings import hash_api_key

OWNER_LENGTH = 32
ANONYMOUS = "anonymous"


def owner_of_request(key_hashes: list[str]) -> str:
    """Return the owner id of the request's key, or raise Unauthorized."""
    if not key_hashes:
        return ANONYMOUS
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    digest = hash_api_key(key.strip())
    # Compare with every hash so the time taken does not tell which one matched.
    matched = [h for h in key_hashes if hmac.compare_digest(h, digest)]
    if not matched:
        raise Unauthorized("The API key is not valid.")
    return matched[0][:OWNER_LENGTH]


def current_owner() -> str:
    """Return the owner id the authentication step stored for this request."""
    owner: str = g.owner
    return owner
