"""Where the registry's files live: a local folder, or object storage spoken to over the S3 API."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from shared.errors import Unavailable
from shared.settings import Settings

if TYPE_CHECKING:
    from minio import Minio

# Files being written sit beside their final name under this prefix, invisible to keys().
_PARTIAL = ".partial-"
_S3_TIMEOUT_S = (5.0, 60.0)  # connect, read
_S3_RETRIES = 3


class Storage(Protocol):
    """Files by key ("a/b/c"): read, write whole (never seen half-written), list and delete."""

    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under the key, or None when there are none."""

    def put(self, key: str, data: bytes) -> None:
        """Store bytes under the key, replacing what was there at once."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file's bytes under the key, replacing what was there at once."""

    def download(self, key: str, path: Path) -> bool:
        """Write the key's bytes to a local file; return False when the key holds nothing."""

    def keys(self, prefix: str) -> list[str]:
        """Return every key that starts with the prefix, sorted."""

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the keys; a key already gone is no error."""

    def local_path(self, key: str) -> Path | None:
        """Return the local file behind the key when the storage is a folder, else None."""


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return parts


class LocalStorage:
    """A folder: each key a file under the root, each write a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key))

    def get(self, key: str) -> bytes | None:
        """Return the file's bytes, or None when there is no such file."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def put(self, key: str, data: bytes) -> None:
        """Write the bytes to a temporary file beside the key's, then rename it into place."""
        with self._replacing(self._path(key)) as handle:
            handle.write(data)

    def put_file(self, key: str, path: Path) -> None:
        """Copy a file to a temporary file beside the key's, then rename it into place."""
        with self._replacing(self._path(key)) as handle, path.open("rb") as source:
            shutil.copyfileobj(source, handle, 1 << 20)

    def download(self, key: str, path: Path) -> bool:
        """Copy the key's file to the path (whole or not at all); False when there is none."""
        source = self._path(key)
        if not source.is_file():
            return False
        with self._replacing(path) as handle, source.open("rb") as read:
            shutil.copyfileobj(read, handle, 1 << 20)
        return True

    def keys(self, prefix: str) -> list[str]:
        """Return the keys of the files under the root whose key starts with the prefix."""
        folder = self.root.joinpath(*[p for p in prefix.split("/")[:-1] if p])
        if not folder.is_dir():
            return []
        found = []
        for directory, _, files in os.walk(folder):
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                key = name if relative == "." else f"{relative}/{name}"
                if not name.startswith(_PARTIAL) and key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def delete(self, keys: Iterable[str]) -> None:
        """Remove the files, then every folder they leave empty up to the root."""
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            for parent in path.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:  # not empty, or already gone
                    break

    def local_path(self, key: str) -> Path | None:
        """Return the file behind the key."""
        return self._path(key)

    @staticmethod
    @contextmanager
    def _replacing(target: Path) -> Iterator[io.BufferedWriter]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_PARTIAL, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(name, target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise


class S3Storage:
    """A bucket (and a prefix in it) of an S3-compatible object store; an object is written whole."""

    def __init__(self, bucket: str, prefix: str, client: Minio) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._client = client

    def _key(self, key: str) -> str:
        return self.prefix + "/".join(_check_key(key))

    def get(self, key: str) -> bytes | None:
        """Return the object's bytes, or None when there is no such object."""
        with _answering(self.bucket):
            try:
                response = self._client.get_object(self.bucket, self._key(key))
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put(self, key: str, data: bytes) -> None:
        """Upload the bytes as one object."""
        with _answering(self.bucket):
            self._client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file as one object (in parts when it is large)."""
        with _answering(self.bucket):
            self._client.fput_object(self.bucket, self._key(key), str(path))

    def download(self, key: str, path: Path) -> bool:
        """Download the object into the file (the client renames a partial file into place)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with _answering(self.bucket):
            try:
                self._client.fget_object(self.bucket, self._key(key), str(path))
            except Exception as exc:
                if _missing(exc):
                    return False
                raise
        return True

    def keys(self, prefix: str) -> list[str]:
        """Return the keys of the objects under the prefix."""
        with _answering(self.bucket):
            listed = self._client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
            names = [item.object_name for item in listed if item.object_name and not item.is_dir]
        return sorted(name.removeprefix(self.prefix) for name in names)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects in one request a thousand keys."""
        from minio.deleteobjects import DeleteObject

        wanted = [DeleteObject(self._key(key)) for key in keys]
        with _answering(self.bucket):
            for start in range(0, len(wanted), 1000):
                errors = list(self._client.remove_objects(self.bucket, wanted[start : start + 1000]))
                if errors:
                    raise Unavailable(
                        f"The model storage did not delete {errors[0].name}: {errors[0].message}"
                    )

    def local_path(self, key: str) -> Path | None:
        """Return None: an object has no local file."""
        return None


def _missing(exc: Exception) -> bool:
    return getattr(exc, "code", None) in ("NoSuchKey", "NoSuchObject")


@contextmanager
def _answering(bucket: str) -> Iterator[None]:
    """Turn the object store's failures into Unavailable errors that say what to check."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:  # the client raises S3Error, urllib3's errors and OSError alike
        code = getattr(exc, "code", None) or type(exc).__name__
        raise Unavailable(
            f"The model storage (bucket {bucket!r}) failed: {code}: {exc}"[:500]
            + ". Check INFER_S3_ENDPOINT_URL, the bucket and the keys; try again once it answers.",
            retry_after=5,
        ) from exc


def _s3_client(settings: Settings) -> Minio:
    """Return an S3 client with bounded timeouts and retries, imported only when S3 is configured."""
    import urllib3
    from minio import Minio

    endpoint = urlsplit(settings.s3_endpoint_url or "https://s3.amazonaws.com")
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        raise ValueError(
            f"INFER_S3_ENDPOINT_URL must be http(s)://host[:port], not {settings.s3_endpoint_url!r}"
        )
    if settings.s3_access_key is None or settings.s3_secret_key is None:
        raise ValueError("A registry in S3 needs INFER_S3_ACCESS_KEY and INFER_S3_SECRET_KEY")
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=_S3_TIMEOUT_S[0], read=_S3_TIMEOUT_S[1]),
        retries=urllib3.Retry(total=_S3_RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=8,
    )
    return Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
        http_client=pool,
    )


def make_storage(settings: Settings) -> Storage:
    """Return the registry's storage: the folder registry_path, or the S3 bucket registry_url names."""
    if settings.registry_url is None:
        return LocalStorage(settings.registry_path)
    url = urlsplit(settings.registry_url)
    return S3Storage(url.netloc, url.path, _s3_client(settings))
