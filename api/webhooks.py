"""A submission's webhook: read from the JSON body or a CSV upload's headers, checked, kept with the job."""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.datastructures import Headers

from shared.errors import InvalidInput
from shared.settings import Settings
from shared.webhooks import (
    EVENTS,
    MAX_URL_LENGTH,
    NOT_ENABLED,
    AddressPolicy,
    UnsafeUrl,
    split_url,
)

URL_HEADER = "Webhook-URL"
EVENTS_HEADER = "Webhook-Events"

Event = Literal["started", "progress", "completed"]


class WebhookBody(BaseModel):
    """Where to POST the job, signed, when the events named happen."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="An http or https URL; one whose host resolves to a loopback, private or link-local "
        "address is refused unless the operator allows it. Redirects are not followed.",
        examples=["https://example.com/hooks/infer"],
    )
    events: list[Event] = Field(
        default=["completed"],
        min_length=1,
        max_length=len(EVENTS),
        description="`started`: a worker began the job; `progress`: a chunk of its records was predicted "
        "(not the last); `completed`: it ended, whatever its status.",
        examples=[["completed"]],
    )


def subscription(settings: Settings, hook: WebhookBody | None, url_field: str) -> str | None:
    """Return the webhook as the job keeps it (JSON), or raise InvalidInput naming the field at fault."""
    if hook is None:
        return None
    if settings.webhook_secret is None:
        raise InvalidInput(NOT_ENABLED, [{"field": url_field, "reason": "webhooks are not enabled"}])
    try:
        AddressPolicy.of(settings).resolve(split_url(hook.url))
    except UnsafeUrl as exc:
        raise InvalidInput(
            f"The webhook URL cannot be used: {exc.reason}.", [{"field": url_field, "reason": exc.reason}]
        ) from None
    events = [event for event in EVENTS if event in hook.events]
    return orjson.dumps({"url": hook.url, "events": events}).decode()


def from_headers(headers: Headers, csv_body: bool) -> WebhookBody | None:
    """Return the webhook a CSV upload names in its Webhook-URL and Webhook-Events headers, if any."""
    url = headers.get(URL_HEADER)
    listed = headers.get(EVENTS_HEADER)
    if not csv_body and (url is not None or listed is not None):
        raise InvalidInput(
            "A JSON submission names its webhook in the body's webhook field, not in headers.",
            [{"field": URL_HEADER if url is not None else EVENTS_HEADER, "reason": "only for CSV bodies"}],
        )
    if url is None:
        if listed is not None:
            raise InvalidInput(
                f"{EVENTS_HEADER} needs a {URL_HEADER} header beside it.",
                [{"field": URL_HEADER, "reason": "missing"}],
            )
        return None
    document: dict[str, object] = {"url": url.strip()}
    if listed is not None:
        document["events"] = [part.strip() for part in listed.split(",") if part.strip()]
    try:
        return WebhookBody.model_validate(document)
    except ValidationError as exc:
        details = [
            {"field": URL_HEADER if err["loc"][:1] == ("url",) else EVENTS_HEADER, "reason": err["msg"]}
            for err in exc.errors()
        ]
        raise InvalidInput(f"The {URL_HEADER} or {EVENTS_HEADER} header is not valid.", details) from None
