"""How jobs look in answers, and how API keys are checked."""

from __future__ import annotations

import pytest
from flask import Flask, g

from api.auth import ADMIN, ANONYMOUS, USER, Caller, caller_of_request, require_admin
from api.views import job_view, rfc3339
from shared.errors import Forbidden, Unauthorized
from shared.settings import Settings, hash_api_key
from shared.store import JobRecord, is_job_id, new_job_id


def _record(status: str, **extra: object) -> JobRecord:
    fields: dict[str, object] = {
        "id": "a" * 32, "owner": "o", "model": "iris", "version": "1.0.0", "status": status,
        "created_at": 100.0, "started_at": 100.5, "completed_at": 101.0, "total": 1, "done": 1,
        "chunks": 1, "predict_ms": 0.25,
    }  # fmt: skip
    fields.update(extra)
    return JobRecord(**fields)  # type: ignore[arg-type]


def test_a_succeeded_job_shows_outputs_metrics_and_urls() -> None:
    """A finished job carries its outputs, its timings in milliseconds and its links."""
    view = job_view(_record("succeeded"), [{"value": 1.0}])
    assert view["outputs"] == [{"value": 1.0}]
    assert view["metrics"] == {"queue_ms": 500.0, "predict_ms": 0.25, "total_ms": 1000.0}
    assert view["created_at"] == "1970-01-01T00:01:40.000Z"
    assert view["urls"]["outputs"] == f"/v1/jobs/{'a' * 32}/outputs"


def test_outputs_are_only_shown_for_succeeded_jobs() -> None:
    """A job that has not succeeded shows no outputs, even if some were passed."""
    assert job_view(_record("running", completed_at=None), [{"value": 1.0}])["outputs"] is None
    assert job_view(_record("queued", started_at=None, completed_at=None))["metrics"]["queue_ms"] is None


def test_job_ids_sort_by_creation_time() -> None:
    """Ids made later sort after ids made earlier, and have the id shape."""
    first, second = new_job_id(1_000.0), new_job_id(1_000.001)
    assert first < second
    assert is_job_id(first)
    assert not is_job_id("../etc/passwd")
    assert not is_job_id(first.upper())
    assert rfc3339(None) is None


def test_keys_are_checked_against_hashes() -> None:
    """A configured key's hash identifies its owner and scope; a wrong or missing key is refused."""
    app = Flask(__name__)
    users, admins = [hash_api_key("k1"), hash_api_key("k2")], [hash_api_key("a1")]
    with app.test_request_context(headers={"Authorization": "Bearer k2"}):
        assert caller_of_request(users, admins) == Caller(users[1][:32], USER)
    with app.test_request_context(headers={"Authorization": "Bearer a1"}):
        assert caller_of_request(users, admins) == Caller(admins[0][:32], ADMIN)
    for header in ({"Authorization": "Bearer k3"}, {"Authorization": "Basic k1"}, {}):
        with app.test_request_context(headers=header), pytest.raises(Unauthorized):
            caller_of_request(users, admins)
    with app.test_request_context(headers={"Authorization": "Bearer a1"}), pytest.raises(Unauthorized):
        caller_of_request(users, [])
    with app.test_request_context():
        assert caller_of_request([], []) == Caller(ANONYMOUS, ADMIN)


def test_only_an_admin_scope_passes_require_admin() -> None:
    """require_admin lets an admin key through and answers a user key with Forbidden."""
    app = Flask(__name__)
    with app.test_request_context():
        g.scope = ADMIN
        require_admin()
        g.scope = USER
        with pytest.raises(Forbidden):
            require_admin()


def test_settings_read_comma_separated_key_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """INFER_API_KEY_HASHES and INFER_ADMIN_KEY_HASHES are comma-separated lists of digests."""
    monkeypatch.setenv("INFER_API_KEY_HASHES", " AB12, cd34 ,")
    monkeypatch.setenv("INFER_ADMIN_KEY_HASHES", "EF56")
    monkeypatch.setenv("INFER_RETENTION_S", "60")
    settings = Settings()
    assert settings.api_key_hashes == ["ab12", "cd34"]
    assert settings.admin_key_hashes == ["ef56"]
    assert settings.retention_s == 60
