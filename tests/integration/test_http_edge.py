"""The HTTP server's edges: requests it refuses before the app sees them, and what they leave in /metrics."""

from __future__ import annotations

import requests

from tests.integration.conftest import Api


def test_invented_methods_add_no_metric_series(api: Api) -> None:
    """200 requests with 200 invented methods leave /metrics about the size it was, naming none of them."""
    session = requests.Session()
    api.request("GET", "/metrics", key=None)  # the scrape's own series exist before the first measure
    before = len(api.request("GET", "/metrics", key=None).content)
    invented = ["INVENTED" + "".join(chr(ord("A") + int(d)) for d in f"{i:03d}") for i in range(200)]
    for method in invented:
        answer = session.request(method, api.base + "/x", timeout=30)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    text = api.request("GET", "/metrics", key=None).text
    assert len(text.encode()) - before < 4096
    assert "INVENTED" not in text
    assert 'infer_http_requests_total{method="other",route="unmatched",status="404"} 200.0' in text
