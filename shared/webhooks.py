"""Webhooks: their events, the addresses they may reach, each key's signing secret, the signature, retries.

Deliveries are signed as Standard Webhooks signs (https://www.standardwebhooks.com): the signature
is ``v1,`` then the base64 HMAC-SHA256, under the key's secret, of ``{id}.{timestamp}.{body}``.
A key's secret is derived from the server's secret and the key's owner id, so every process
computes the same one and none is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from shared.settings import Settings

EVENTS = ("started", "progress", "completed")
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix Standard Webhooks gives a secret, not a secret)
MAX_URL_LENGTH = 2048
# Why the secret route and a submission are refused while the operator has not set a secret.
NOT_ENABLED = "This deployment sends no webhooks: its operator must set INFER_WEBHOOK_SECRET."
_SECRET_CONTEXT = b"infer webhook secret\0"


class UnsafeUrl(ValueError):
    """A webhook URL that may not be used, with the reason in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: its scheme, host and port."""

    scheme: str
    host: str
    port: int


def split_url(url: str) -> Target:
    """Return the scheme, host and port of an http or https URL, or raise UnsafeUrl saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the scheme must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not taken (deliveries are signed instead)")
    if any(char.isspace() or ord(char) < 32 for char in url):
        raise UnsafeUrl("the URL holds spaces or control characters")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, plus private ones when the operator allows them."""

    allow_private: bool = False
    allowed: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> AddressPolicy:
        """Return the policy the settings describe."""
        return cls(settings.webhook_allow_private, tuple(settings.webhook_allowed_networks))

    def refusal(self, address: IPv4Address | IPv6Address) -> str | None:
        """Return why an address may not be reached, or None when it may."""
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_private or any(address in network for network in self.allowed):
            return None
        kinds = (
            ("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
            ("link-local", address.is_link_local), ("multicast", address.is_multicast),
            ("reserved", address.is_reserved), ("private", address.is_private),
            ("non-public", not address.is_global),
        )  # fmt: skip
        for kind, found in kinds:
            if found:
                return f"it resolves to {address}, a {kind} address (the operator may allow it)"
        return None

    def resolve(self, target: Target) -> list[str]:
        """Return the addresses a target's host resolves to, or raise UnsafeUrl if any may not be reached.

        Every address is checked, not only the first, so a name cannot slip a private one in behind a
        public one.
        """
        try:
            found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl(f"its host {target.host} does not resolve ({exc})") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not addresses:
            raise UnsafeUrl(f"its host {target.host} does not resolve")
        for text in addresses:
            reason = self.refusal(ipaddress.ip_address(text.partition("%")[0]))
            if reason:
                raise UnsafeUrl(reason)
        return addresses


def key_secret(server_secret: str, owner: str) -> bytes:
    """Return the signing secret of an API key's owner, derived from the server's secret."""
    return hmac.new(server_secret.encode(), _SECRET_CONTEXT + owner.encode(), hashlib.sha256).digest()


def secret_text(secret: bytes) -> str:
    """Return a signing secret as Standard Webhooks writes it: whsec_ then its base64."""
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def signature(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """Return the webhook-signature header of a delivery: v1, then the base64 HMAC-SHA256."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class RetrySchedule:
    """When a failed delivery is tried again: backoff doubling up to a cap, jittered, for a time at least."""

    first_s: float = 5.0
    cap_s: float = 1_800.0
    retry_for_s: float = 3_600.0

    @classmethod
    def of(cls, settings: Settings) -> RetrySchedule:
        """Return the schedule the settings describe."""
        return cls(settings.webhook_backoff_s, settings.webhook_backoff_max_s, settings.webhook_retry_for_s)

    def delay(self, failures: int, jitter: float) -> float:
        """Return the seconds to wait after the given number of failed attempts; jitter is in [0, 1).

        The delay doubles with each failure up to the cap, then is spread over 75 % to 125 % of itself
        (never past the cap), so receivers that failed together are not retried together.
        """
        doubled = self.first_s * 2.0 ** min(max(failures - 1, 0), 60)
        return min(self.cap_s, doubled * (0.75 + 0.5 * jitter))

    def next_try(self, failures: int, created_at: float, now: float, jitter: float) -> float | None:
        """Return when to try a failed delivery again, or None once it has been tried long enough."""
        if now - created_at >= self.retry_for_s:
            return None
        return now + self.delay(failures, jitter)
