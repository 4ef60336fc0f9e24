"""Bearer API keys: each request's key is hashed and compared in constant time to the configured hashes.

A key is a user key (submits and reads its own jobs, reads models) or an admin key (may also publish,
route and retire model versions); with no key configured at all, every caller is an anonymous admin.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from flask import g, request

from shared.errors import Forbidden, Unauthorized
from shared.settings import hash_api_key

OWNER_LENGTH = 32
ANONYMOUS = "anonymous"
USER: Literal["user"] = "user"
ADMIN: Literal["admin"] = "admin"
Scope = Literal["user", "admin"]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the owner id of its key and the key's scope."""

    owner: str
    scope: Scope


def caller_of_request(user_hashes: list[str], admin_hashes: list[str]) -> Caller:
    """Return the owner and scope of the request's key, or raise Unauthorized."""
    if not user_hashes and not admin_hashes:
        return Caller(ANONYMOUS, ADMIN)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    digest = hash_api_key(key.strip())
    # Compare with every hash of both scopes so the time taken does not tell which one matched.
    admins = [h for h in admin_hashes if hmac.compare_digest(h, digest)]
    users = [h for h in user_hashes if hmac.compare_digest(h, digest)]
    if admins:
        return Caller(admins[0][:OWNER_LENGTH], ADMIN)
    if users:
        return Caller(users[0][:OWNER_LENGTH], USER)
    raise Unauthorized("The API key is not valid.")


def current_owner() -> str:
    """Return the owner id the authentication step stored for this request."""
    owner: str = g.owner
    return owner


def require_admin() -> None:
    """Raise Forbidden unless the request's key is an admin key."""
    if g.get("scope") != ADMIN:
        raise Forbidden(
            "This route needs an admin key; this key is a user key. Ask an operator for an admin key.",
            [{"field": "Authorization", "reason": "user key on an admin route"}],
        )
