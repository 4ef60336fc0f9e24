"""The registry in object storage: a real S3-compatible server (SeaweedFS), a stack reading from it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from shared.errors import ModelLoadError
from shared.registry import MANIFEST, Manifest, Registry, bump_generation, make_registry
from shared.storage import LocalStorage, S3Storage
from tests.integration.conftest import Api
from tests.integration.s3 import SeaweedS3
from tools.stack import Stack, free_port, wait_until
from worker.cache import ModelCache

BUCKET = "models"
QUEUE = "s3-registry"
IRIS_ROW = [6.2, 2.9, 4.3, 1.3]


@pytest.fixture
def s3_url(s3_server: SeaweedS3) -> str:
    """Return the URL of an empty registry of the test's own in the bucket (of the session's S3 server)."""
    return f"s3://{s3_server.bucket(BUCKET)}/registry-{secrets.token_hex(4)}"


def _files(source: Registry, manifest: Manifest) -> dict[str, Path]:
    """Return every file of a version of a folder registry but its manifest, by name."""
    folder = f"{manifest.name}/{manifest.version}/"
    found = {}
    for key in source.storage.keys(folder):
        path = source.storage.local_path(key)
        if path is not None and path.name != MANIFEST:
            found[path.name] = path
    return found


def _seed(target: Registry, registry_path: Path) -> Registry:
    """Publish every version of the session's folder registry into the target; return the source."""
    source = Registry(LocalStorage(registry_path))
    source.refresh()
    for manifest in source.all():
        target.add_version(manifest, _files(source, manifest))
    return source


def test_the_registry_in_a_bucket_lists_adds_retires_and_verifies_like_a_folder(
    s3_server: SeaweedS3, s3_url: str, registry_path: Path, tmp_path: Path
) -> None:
    """Every registry operation works over S3; a download whose bytes changed in the bucket is refused."""
    target = make_registry(s3_server.settings(s3_url))
    assert isinstance(target.storage, S3Storage)
    source = _seed(target, registry_path)
    reader = make_registry(s3_server.settings(s3_url))
    reader.refresh()
    assert reader.names() == source.names()
    iris = reader.get("iris")
    assert iris == source.get("iris")
    path = reader.artifact_path(iris, tmp_path / "cache")
    assert path.is_relative_to(tmp_path / "cache")
    assert path.read_bytes() == (registry_path / "iris" / "1.0.0" / iris.artifact).read_bytes()
    target.storage.put(f"iris/1.0.0/{iris.artifact}", b"tampered")
    path.unlink()
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        reader.artifact_path(iris, tmp_path / "cache")
    assert not path.exists()  # the bad download is not kept
    target.retire("iris", "1.0.0")
    reader.refresh()
    assert "iris" not in reader.names()
    assert target.storage.keys("iris/") == []
    target.put_upload("job-1", {"notes.txt": _write(tmp_path / "notes.txt", b"n")})
    assert target.fetch_upload("job-1", tmp_path / "upload") == {
        "notes.txt": tmp_path / "upload" / "notes.txt"
    }
    target.drop_upload("job-1")
    assert target.storage.keys("uploads/") == []


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_stack_on_a_bucket_serves_a_version_added_while_it_runs_and_never_a_tampered_one(
    s3_server: SeaweedS3,
    s3_url: str,
    registry_path: Path,
    stack_factory: Callable[..., Stack],
    clean_redis: redis.Redis,
) -> None:
    """A version added to the bucket is served without a restart; one whose artifact changed is refused."""
    target = make_registry(s3_server.settings(s3_url))
    source = _seed(target, registry_path)
    stack = stack_factory(INFER_QUEUE_NAME=QUEUE, **s3_server.env(s3_url))
    api = Api(stack.start_api(free_port()))
    stack.start_worker("worker-s3", 1)
    served = api.submit("iris", [IRIS_ROW], wait=60).json()
    assert (served["status"], served["version"]) == ("succeeded", "1.0.0"), served
    iris = source.get("iris")
    files = _files(source, iris)

    target.add_version(iris.model_copy(update={"version": "1.1.0"}), files)
    bump_generation(clean_redis)
    job = api.submit("iris", [IRIS_ROW], wait=60, version="1.1.0").json()
    assert (job["status"], job["version"]) == ("succeeded", "1.1.0"), job
    assert job["outputs"] == served["outputs"]
    listed = api.request("GET", "/v1/models/iris").json()
    assert "1.1.0" in listed["versions"]

    target.add_version(iris.model_copy(update={"version": "1.2.0"}), files)
    target.storage.put(f"iris/1.2.0/{iris.artifact}", files[iris.artifact].read_bytes() + b"tampered")
    bump_generation(clean_redis)
    refused = api.submit("iris", [IRIS_ROW], wait=60, version="1.2.0").json()
    assert refused["status"] == "failed", refused
    assert refused["error"]["code"] == "model_unavailable"
    assert "sha256" in refused["error"]["message"]
    assert not refused.get("outputs")
    again = api.submit("iris", [IRIS_ROW], wait=60, version="1.1.0").json()
    assert again["status"] == "succeeded", again


def test_a_worker_cache_drops_a_version_retired_elsewhere_within_seconds(
    s3_server: SeaweedS3, s3_url: str, registry_path: Path, clean_redis: redis.Redis
) -> None:
    """After another process retires a version and bumps the generation, the cache lets it go."""
    publisher = make_registry(s3_server.settings(s3_url))
    source = _seed(publisher, registry_path)
    iris = source.get("iris")
    publisher.add_version(iris.model_copy(update={"version": "1.1.0"}), _files(source, iris))
    cache = ModelCache(make_registry(s3_server.settings(s3_url)), client=clean_redis)
    cache.get("iris", "1.1.0")
    cache.get("iris", "1.0.0")
    assert ("iris", "1.1.0") in cache.loaded()
    publisher.retire("iris", "1.1.0")
    bump_generation(clean_redis)

    def dropped() -> bool:
        cache.get("iris", "1.0.0")  # serving is what looks at the generation
        return ("iris", "1.1.0") not in cache.loaded()

    wait_until(dropped, 10, "the retired version's drop")
    with pytest.raises(ModelLoadError, match=r"no version '1\.1\.0'"):
        cache.get("iris", "1.1.0")
