"""Webhook rules on their own: URL and address checks, the retry schedule, secrets, signatures, one POST."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.datastructures import Headers

from api import contract
from api.app import create_app
from api.webhooks import WebhookBody, from_headers, subscription
from shared.errors import InvalidInput
from shared.settings import Settings
from shared.webhook_store import Attempt
from shared.webhooks import (
    AddressPolicy,
    RetrySchedule,
    Target,
    UnsafeUrl,
    key_secret,
    secret_text,
    signature,
    split_url,
)
from tests.webhook_receivers import Hanging, Receiver, closed_port_url
from worker.webhook_http import Limits, Sender

NO_REDIS = "redis://127.0.0.1:1/0"
LOOPBACK = AddressPolicy(allowed=(ip_network("127.0.0.0/8"), ip_network("::1/128")))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https:///nohost", "no host"),
        ("https://user:secret@example.com/", "credentials"),
        ("https://example.com:99999/", "not a URL"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_urls_that_are_not_plain_http_or_https_are_refused(url: str, reason: str) -> None:
    """Other schemes, no host, credentials, bad ports, spaces and overlong URLs are each refused by name."""
    with pytest.raises(UnsafeUrl, match=reason):
        split_url(url)


def test_http_and_https_urls_give_their_host_and_port() -> None:
    """The port defaults by scheme; an IPv6 literal loses its brackets."""
    assert split_url("https://Example.com/x?y=1") == Target("https", "example.com", 443)
    assert split_url("http://example.com/x") == Target("http", "example.com", 80)
    assert split_url("http://[::1]:8080/x") == Target("http", "::1", 8080)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"),
        ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("fc00::5", "private"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"),  # noqa: S104 (an address checked, not bound) ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"), ("100.64.0.1", "non-public"),
    ],
)  # fmt: skip
def test_addresses_outside_the_public_internet_are_refused_by_kind(address: str, kind: str) -> None:
    """Each non-public address is refused with its kind named; an IPv4-mapped IPv6 one as its IPv4."""
    reason = AddressPolicy().refusal(ip_address(address))
    assert reason is not None
    assert f"a {kind} address" in reason


def test_public_addresses_pass_and_the_operator_may_allow_others() -> None:
    """Public addresses pass; allow_private passes all; listed networks pass only their own."""
    assert AddressPolicy().refusal(ip_address("8.8.8.8")) is None
    assert AddressPolicy().refusal(ip_address("2001:4860:4860::8888")) is None
    assert AddressPolicy(allow_private=True).refusal(ip_address("10.0.0.1")) is None
    assert LOOPBACK.refusal(ip_address("127.0.0.5")) is None
    assert LOOPBACK.refusal(ip_address("10.0.0.1")) is not None


def test_every_address_a_host_resolves_to_is_checked() -> None:
    """A name is refused if it resolves to a forbidden address; an unknown name says it does not resolve."""
    with pytest.raises(UnsafeUrl, match="loopback"):
        AddressPolicy().resolve(Target("http", "localhost", 80))
    assert "127.0.0.1" in LOOPBACK.resolve(Target("http", "localhost", 80))
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        AddressPolicy().resolve(Target("http", "nothing.invalid", 80))


def test_settings_read_the_allowed_networks_as_a_comma_separated_list() -> None:
    """INFER_WEBHOOK_ALLOWED_NETWORKS is a list of CIDRs, as the policy takes them."""
    settings = Settings(webhook_allowed_networks="127.0.0.0/8, fd00::/8")
    policy = AddressPolicy.of(settings)
    assert policy.refusal(ip_address("fd00::1")) is None
    assert policy.refusal(ip_address("192.168.0.1")) is not None


def test_retries_double_from_the_first_delay_up_to_the_cap_with_bounded_jitter() -> None:
    """The delay doubles per failure, spread over 75-125 % of itself, and never passes the cap."""
    schedule = RetrySchedule(first_s=5, cap_s=1800, retry_for_s=3600)
    assert [schedule.delay(n, 0.5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert schedule.delay(1, 0.0) == 3.75
    assert schedule.delay(1, 0.999999) == pytest.approx(6.25)
    assert schedule.delay(30, 0.999999) == 1800
    assert schedule.delay(10_000, 0.5) == 1800


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999999])
def test_a_failing_delivery_is_tried_for_at_least_the_retry_period_then_given_up(jitter: float) -> None:
    """With the shipped schedule, retries go on for an hour at least, then next_try says stop."""
    schedule = RetrySchedule()
    created = now = 1_000_000.0
    failures = 0
    while True:
        failures += 1
        due = schedule.next_try(failures, created, now, jitter)
        if due is None:
            break
        assert due > now
        now = due
    assert now - created >= 3600
    assert now - created < 3600 + 1800 * 1.25
    assert 10 <= failures <= 20


def test_a_keys_secret_is_the_same_everywhere_and_its_own() -> None:
    """The derived secret depends only on the server's secret and the owner, written as Standard Webhooks'."""
    first = key_secret("server", "owner-a")
    assert first == key_secret("server", "owner-a")
    assert first != key_secret("server", "owner-b")
    assert first != key_secret("other", "owner-a")
    text = secret_text(first)
    assert text.startswith("whsec_")
    contract.WebhookSecret.model_validate({"secret": text})
    Webhook(text)  # the reference library takes it


def test_signatures_verify_with_the_standard_webhooks_reference_library() -> None:
    """A signed body verifies with the key's secret, and not with another key's or once changed."""
    secret = key_secret("server", "owner-a")
    body = b'{"id": "x", "status": "succeeded"}'
    now = int(time.time())
    headers = {"webhook-id": "job-completed", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = signature(secret, "job-completed", now, body)
    reference = Webhook(secret_text(secret))
    assert reference.verify(body, headers) == {"id": "x", "status": "succeeded"}
    expected = reference.sign("job-completed", datetime.fromtimestamp(now, UTC), body.decode())
    assert headers["webhook-signature"] == expected
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_text(key_secret("server", "owner-b"))).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        reference.verify(body + b" ", headers)


def test_the_deliveries_view_is_a_delivery_list_of_the_contract() -> None:
    """An attempt with a status and one with an error fit the contract's DeliveryList."""
    answered = Attempt(1_000.0, 500, None, 12.5).view()
    failed = Attempt(1_001.0, None, "no answer within 10 s", 10_000.0).view()
    delivery = {
        "id": "0" * 32 + "-completed", "event": "completed", "url": "https://example.com/",
        "state": "pending", "attempts": [answered, failed], "next_attempt_at": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    contract.DeliveryList.model_validate({"deliveries": [delivery]})
    assert set(delivery) == set(contract.Delivery.model_fields)


def test_a_csv_uploads_webhook_comes_from_its_headers() -> None:
    """Webhook-URL and Webhook-Events make the webhook; bad events, or headers on JSON, name the header."""
    hook = from_headers(
        Headers({"Webhook-URL": "https://example.com/h", "Webhook-Events": "started, completed"}), True
    )
    assert hook == WebhookBody(url="https://example.com/h", events=["started", "completed"])
    assert from_headers(Headers({"Webhook-URL": "https://example.com/h"}), True) == WebhookBody(
        url="https://example.com/h", events=["completed"]
    )
    assert from_headers(Headers(), True) is None
    for headers, csv_body, field in (
        ({"Webhook-URL": "https://example.com/h", "Webhook-Events": "finished"}, True, "Webhook-Events"),
        ({"Webhook-Events": "completed"}, True, "Webhook-URL"),
        ({"Webhook-URL": "https://example.com/h"}, False, "Webhook-URL"),
    ):
        with pytest.raises(InvalidInput) as caught:
            from_headers(Headers(headers), csv_body)
        assert caught.value.details[0]["field"] == field


def test_a_webhook_is_refused_without_the_operators_secret_or_to_a_private_address() -> None:
    """No server secret: refused saying the operator must set it; a private address: refused by field."""
    hook = WebhookBody(url="http://10.0.0.1/hook")
    with pytest.raises(InvalidInput, match="INFER_WEBHOOK_SECRET") as caught:
        subscription(Settings(), hook, "webhook.url")
    assert caught.value.details[0]["field"] == "webhook.url"
    enabled = Settings(webhook_secret="s")
    with pytest.raises(InvalidInput, match="private address") as caught:
        subscription(enabled, hook, "Webhook-URL")
    assert caught.value.details == [{"field": "Webhook-URL", "reason": caught.value.details[0]["reason"]}]
    kept = subscription(enabled, WebhookBody(url="http://8.8.8.8/h", events=["completed", "started"]), "x")
    assert kept == '{"url":"http://8.8.8.8/h","events":["started","completed"]}'


def test_the_secret_route_says_webhooks_are_off_until_the_operator_sets_the_secret(tmp_path: Path) -> None:
    """Without INFER_WEBHOOK_SECRET the secret route is 404 not_found naming the setting."""
    app = create_app(Settings(redis_url=NO_REDIS, registry_path=tmp_path, api_key_hashes=[]))
    answer = app.test_client().get("/v1/webhooks/secret")
    assert answer.status_code == 404
    assert "INFER_WEBHOOK_SECRET" in answer.get_json()["error"]["message"]
    enabled = Settings(redis_url=NO_REDIS, registry_path=tmp_path, api_key_hashes=[], webhook_secret="s")
    secret = create_app(enabled).test_client().get("/v1/webhooks/secret").get_json()["secret"]
    assert secret == secret_text(key_secret("s", "anonymous"))


@pytest.fixture
def receiver() -> Receiver:
    """Return a receiver answering 200 on loopback."""
    return Receiver()


def test_one_post_reaches_an_allowed_receiver_with_its_headers_and_body(receiver: Receiver) -> None:
    """A 2xx is recorded with its status; the receiver gets the body and headers as sent."""
    attempt = Sender(LOOPBACK, Limits()).post(receiver.url(), {"webhook-id": "d1"}, b'{"a": 1}')
    assert attempt.ok
    assert attempt.status == 200
    assert attempt.error is None
    (got,) = receiver.posts()
    assert got.body == b'{"a": 1}'
    assert got.headers["webhook-id"] == "d1"


def test_a_forbidden_address_is_refused_at_the_moment_of_connecting(receiver: Receiver) -> None:
    """Without the allowance the sender never connects to loopback, whatever the URL passed before."""
    attempt = Sender(AddressPolicy(), Limits()).post(receiver.url(), {}, b"{}")
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused: ")
    assert "loopback" in attempt.error
    assert receiver.posts() == []


def test_a_redirect_is_an_answer_not_followed() -> None:
    """A 307 is recorded as the status; the place it points to gets nothing."""
    target = Receiver()
    redirect = Receiver([307], location=target.url())
    attempt = Sender(LOOPBACK, Limits()).post(redirect.url(), {}, b"{}")
    assert attempt.status == 307
    assert not attempt.ok
    assert target.posts() == []


def test_a_closed_port_is_a_connection_error() -> None:
    """Nothing listening: the attempt records the refused connection at once."""
    attempt = Sender(LOOPBACK, Limits()).post(closed_port_url(), {}, b"{}")
    assert attempt.status is None
    assert attempt.error is not None
    assert "refused" in attempt.error.lower()
    assert attempt.duration_ms < 3_000


def test_a_receiver_that_never_answers_holds_the_attempt_only_until_its_time_is_up() -> None:
    """A hanging receiver costs the attempt's total time, then a timeout is recorded."""
    hanging = Hanging()
    attempt = Sender(LOOPBACK, Limits(connect_s=1, total_s=1.5)).post(hanging.url(), {}, b"{}")
    assert attempt.status is None
    assert attempt.error == "no answer within 1.5 s"
    assert 1_400 <= attempt.duration_ms < 6_000
    hanging.close()


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_at_the_total_time() -> None:
    """Reads each within their own timeout still end when the attempt's total time is up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def drip() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):  # the sender hangs up part way: that is the point
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                conn.send(bytes([byte]))
                time.sleep(0.2)

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    attempt = Sender(LOOPBACK, Limits(connect_s=1, total_s=1.5)).post(url, {}, b"{}")
    assert attempt.status is None
    assert attempt.error == "no answer within 1.5 s"
    assert attempt.duration_ms < 6_000
    listener.close()


def test_an_empty_webhook_secret_from_compose_means_webhooks_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes ${INFER_WEBHOOK_SECRET:-} as an empty string: no secret, not an empty one."""
    monkeypatch.setenv("INFER_WEBHOOK_SECRET", "")
    assert Settings().webhook_secret is None
    monkeypatch.setenv("INFER_WEBHOOK_SECRET", "s3cret")
    secret = Settings().webhook_secret
    assert secret is not None
    assert secret.get_secret_value() == "s3cret"
