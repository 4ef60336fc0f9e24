"""The registry over a local folder: atomic writes, versions added manifest last, retired, uploads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.errors import Conflict, ModelLoadError, UnknownModel, UnknownVersion
from shared.registry import Manifest, Registry, file_sha256
from shared.storage import LocalStorage


class RecordingStorage(LocalStorage):
    """A real folder that records the order of its writes, and fails at a chosen key as a full disk would."""

    def __init__(self, root: Path, fail_at: str | None = None) -> None:
        super().__init__(root)
        self.fail_at = fail_at
        self.written: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        """Write, or fail at the chosen key."""
        self._write(key)
        super().put(key, data)

    def put_file(self, key: str, path: Path) -> None:
        """Write a file, or fail at the chosen key."""
        self._write(key)
        super().put_file(key, path)

    def _write(self, key: str) -> None:
        if self.fail_at is not None and key.endswith(self.fail_at):
            raise OSError(28, "No space left on device")
        self.written.append(key)


def _version(registry: Registry, name: str, version: str, files: Path) -> tuple[Manifest, dict[str, Path]]:
    """Return a copy of the session's iris manifest as another version, with files of that version."""
    iris = registry.get("iris")
    folder = files / version
    folder.mkdir(parents=True)
    for artifact in iris.artifacts:
        shutil.copy(registry_file(registry, iris, artifact), folder / artifact)
    (folder / "notes.txt").write_text("trained on a copy of iris")
    manifest = iris.model_copy(update={"name": name, "version": version})
    return manifest, {p.name: p for p in folder.iterdir()}


def registry_file(registry: Registry, manifest: Manifest, filename: str) -> Path:
    """Return the local file of a version in a folder registry."""
    path = registry.storage.local_path(f"{manifest.name}/{manifest.version}/{filename}")
    assert path is not None
    return path


@pytest.fixture
def target(tmp_path: Path) -> Registry:
    """Return an empty registry in a folder of the test's own."""
    return Registry(LocalStorage(tmp_path / "registry"))


@pytest.fixture
def flowers(registry: Registry, tmp_path: Path) -> tuple[Manifest, dict[str, Path]]:
    """Return the manifest and files of a version 1.0.0 of "flowers" (the session's iris)."""
    return _version(registry, "flowers", "1.0.0", tmp_path / "files")


def test_local_storage_writes_whole_files_lists_by_prefix_and_deletes_empty_folders(tmp_path: Path) -> None:
    """Each write replaces a file at once; keys list by prefix; deleting the last file removes its folders."""
    storage = LocalStorage(tmp_path / "root")
    storage.put("a/b/one", b"1")
    storage.put("a/b/one", b"one")
    source = tmp_path / "two.bin"
    source.write_bytes(b"2" * 3_000_000)
    storage.put_file("a/c/two", source)
    assert storage.get("a/b/one") == b"one"
    assert storage.get("a/b/none") is None
    assert storage.keys("") == ["a/b/one", "a/c/two"]
    assert storage.keys("a/b") == ["a/b/one"]
    assert storage.keys("a/c/") == ["a/c/two"]
    assert storage.keys("z/") == []
    copy = tmp_path / "out" / "two"
    assert storage.download("a/c/two", copy)
    assert copy.read_bytes() == source.read_bytes()
    assert not storage.download("a/c/none", tmp_path / "out" / "none")
    assert not (tmp_path / "out" / "none").exists()
    storage.delete(["a/c/two", "a/c/never"])
    assert not (tmp_path / "root" / "a" / "c").exists()
    assert storage.keys("") == ["a/b/one"]
    # Only the partial files of writes in progress start with the prefix they use; none is left.
    assert [p.name for p in (tmp_path / "root" / "a" / "b").iterdir()] == ["one"]


def test_a_failed_local_write_leaves_the_old_file_and_no_partial_file(tmp_path: Path) -> None:
    """A write that fails half-way (its source vanished) keeps what the key held and leaves nothing else."""
    storage = LocalStorage(tmp_path)
    storage.put("m/file", b"old")
    with pytest.raises(FileNotFoundError):
        storage.put_file("m/file", tmp_path / "missing")
    assert storage.get("m/file") == b"old"
    assert storage.keys("m/") == ["m/file"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["file"]


@pytest.mark.parametrize("key", ["", "a//b", "../etc/passwd", "a/./b", "a/../b", "a\\b", "/abs"])
def test_keys_that_could_leave_the_folder_are_refused(tmp_path: Path, key: str) -> None:
    """A key with an empty, dot or dot-dot part, or a backslash, is refused before any file is touched."""
    with pytest.raises(ValueError, match="not a storage key"):
        LocalStorage(tmp_path).put(key, b"x")


def test_a_version_is_added_files_first_manifest_last_and_the_first_becomes_the_default(
    registry: Registry, tmp_path: Path
) -> None:
    """Every file is written before the manifest; the model's first version is its default, not the next."""
    storage = RecordingStorage(tmp_path / "registry")
    target = Registry(storage)
    first, files = _version(registry, "flowers", "1.0.0", tmp_path / "files")
    target.add_version(first, files)
    assert storage.written[-1] == "flowers/1.0.0/manifest.json"
    assert set(storage.written[:-1]) == {f"flowers/1.0.0/{f}" for f in files} | {"flowers/default"}
    second, files = _version(registry, "flowers", "1.1.0", tmp_path / "more")
    target.add_version(second, files)
    assert target.versions("flowers") == ["1.0.0", "1.1.0"]
    assert target.default_version("flowers") == "1.0.0"
    assert target.read_file(second, "notes.txt") == b"trained on a copy of iris"
    assert target.read_file(second, "nothing.json") is None
    again = Registry(LocalStorage(tmp_path / "registry"))
    again.refresh()
    assert again.get("flowers", "1.1.0") == second
    # A manifest cut short (a copy in progress) hides its own version only.
    storage.put("flowers/1.1.0/manifest.json", b'{"name": "flowers", "vers')
    fresh = Registry(LocalStorage(tmp_path / "registry"))
    fresh.refresh()
    assert fresh.versions("flowers") == ["1.0.0"]


def test_a_version_whose_files_fail_to_store_is_never_listed(registry: Registry, tmp_path: Path) -> None:
    """A failure before the manifest is written (a full disk) leaves the version unlisted everywhere."""
    manifest, files = _version(registry, "flowers", "1.0.0", tmp_path / "files")
    broken = Registry(RecordingStorage(tmp_path / "registry", fail_at="notes.txt"))
    with pytest.raises(OSError, match="No space"):
        broken.add_version(manifest, files)
    reader = Registry(LocalStorage(tmp_path / "registry"))
    reader.refresh()
    assert reader.names() == []
    with pytest.raises(UnknownModel):
        reader.get("flowers", "1.0.0")


def test_adding_a_published_version_again_is_a_conflict_and_changes_nothing(
    target: Registry, flowers: tuple[Manifest, dict[str, Path]]
) -> None:
    """The second add of a version raises Conflict and leaves the first one's manifest and files."""
    manifest, files = flowers
    target.add_version(manifest, files)
    before = {k: target.storage.get(k) for k in target.storage.keys("")}
    changed = manifest.model_copy(update={"description": "another"})
    with pytest.raises(Conflict, match="published already"):
        target.add_version(changed, files)
    assert {k: target.storage.get(k) for k in target.storage.keys("")} == before


def test_a_version_whose_files_disagree_with_its_manifest_is_not_added(
    target: Registry, flowers: tuple[Manifest, dict[str, Path]]
) -> None:
    """An artifact whose bytes are not the manifest's, or a reserved name, is refused up front."""
    manifest, files = flowers
    files[manifest.artifact].write_bytes(b"other bytes")
    with pytest.raises(ValueError, match="sha256"):
        target.add_version(manifest, files)
    with pytest.raises(ValueError, match="publishable"):
        target.add_version(manifest.model_copy(update={"name": "uploads"}), files)
    assert target.storage.keys("") == []


def test_a_retired_version_is_unlisted_and_its_files_are_gone(
    registry: Registry, target: Registry, tmp_path: Path
) -> None:
    """Retiring removes a version's manifest and files; the last version's retirement removes the model."""
    for version in ("1.0.0", "1.1.0"):
        target.add_version(*_version(registry, "flowers", version, tmp_path / "files"))
    target.retire("flowers", "1.1.0")
    assert target.versions("flowers") == ["1.0.0"]
    assert target.storage.keys("flowers/1.1.0/") == []
    assert not (tmp_path / "registry" / "flowers" / "1.1.0").exists()
    with pytest.raises(UnknownVersion):
        target.retire("flowers", "1.1.0")
    target.retire("flowers", "1.0.0")
    assert target.storage.keys("") == []
    assert target.names() == []


def test_the_artifact_of_a_folder_is_served_in_place_once_its_digest_matches(
    target: Registry, flowers: tuple[Manifest, dict[str, Path]], tmp_path: Path
) -> None:
    """artifact_path returns the folder's own file, and refuses it once its bytes change or it is gone."""
    manifest, files = flowers
    target.add_version(manifest, files)
    path = target.artifact_path(manifest, tmp_path / "cache")
    assert path == tmp_path / "registry" / "flowers" / "1.0.0" / manifest.artifact
    assert file_sha256(path) == manifest.sha256
    assert not (tmp_path / "cache").exists()
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        target.artifact_path(manifest, tmp_path / "cache")
    path.unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        target.artifact_path(manifest, tmp_path / "cache")


def test_uploads_are_kept_fetched_and_dropped_apart_from_the_models(target: Registry, tmp_path: Path) -> None:
    """A publish job's files are stored under its id, fetched whole into a folder, then deleted."""
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "model.onnx").write_bytes(b"\x00model")
    (sent / "metadata.json").write_text('{"version": "1.0.0"}')
    target.put_upload("job-1", {p.name: p for p in sent.iterdir()})
    target.refresh()
    assert target.names() == []
    got = target.fetch_upload("job-1", tmp_path / "work")
    assert {name: path.read_bytes() for name, path in got.items()} == {
        "model.onnx": b"\x00model",
        "metadata.json": b'{"version": "1.0.0"}',
    }
    assert target.fetch_upload("job-2", tmp_path / "other") == {}
    target.drop_upload("job-1")
    assert target.storage.keys("") == []
    with pytest.raises(ValueError, match="not a job id"):
        target.drop_upload("../iris")
