"""A Sentinel-managed Redis on this machine: a master, its replicas and redis-sentinel processes, on loopback.

The failover drill (tests/integration/test_failover.py) and benchmark F start the service on it:
``SentinelStack.start_sentinel_redis`` sets the INFER_REDIS_SENTINELS family of variables, so every
process the stack starts afterwards follows the master the sentinels name.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from tools.stack import REDIS_MAXMEMORY, Stack, _redis_quoted, free_port, wait_until, write_private

MASTER_NAME = "inference"
# Replication and monitoring a drill can wait for: a replica syncs at once (no diskless delay), a
# sentinel calls a silent master down after DOWN_AFTER_MS, and gives up a failover after FAILOVER_TIMEOUT_MS.
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 5_000
READY_S = 60
START_ATTEMPTS = 3


@dataclass
class SentinelGroup:
    """Where the Redis nodes and sentinels listen, and the passwords of each."""

    password: str
    sentinel_password: str
    nodes: dict[str, int] = field(default_factory=dict)
    sentinels: dict[str, int] = field(default_factory=dict)

    def sentinel(self, name: str) -> redis.Redis:
        """Return a client of one sentinel."""
        port = self.sentinels[name]
        return redis.Redis(
            port=port, password=self.sentinel_password, decode_responses=True, socket_timeout=2
        )

    def node(self, name: str) -> redis.Redis:
        """Return a client of one Redis node, master or replica."""
        port = self.nodes[name]
        return redis.Redis(port=port, password=self.password, decode_responses=True, socket_timeout=2)

    def master(self) -> str | None:
        """Return the name of the node a majority of the sentinels call master now, if any."""
        votes: dict[str, int] = {}
        for name in self.sentinels:
            try:
                found = self.sentinel(name).sentinel_get_master_addr_by_name(MASTER_NAME)
                _, port = cast(tuple[str, int], found)
            except (redis.RedisError, TypeError, ValueError):
                continue
            node = next((n for n, p in self.nodes.items() if p == int(port)), None)
            if node is not None:
                votes[node] = votes.get(node, 0) + 1
        best = max(votes, key=lambda n: votes[n], default=None)
        return best if best is not None and votes[best] * 2 > len(self.sentinels) else None


class _PortTaken(RuntimeError):
    """A process of the group exited as it started, most likely because its port was taken."""


def _free_ports(count: int) -> list[int]:
    """Return count distinct ports nothing listens on now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def _sentinel_program() -> str:
    program = shutil.which("redis-sentinel")
    if program is None:
        raise RuntimeError("redis-sentinel is not installed: run 'make redis' (Debian's package of it)")
    return program


class SentinelStack(Stack):
    """The project's Stack on a Sentinel-managed Redis instead of one redis-server."""

    group: SentinelGroup | None = None

    def start_sentinel_redis(
        self, password: str, sentinel_password: str, replicas: int = 2, sentinels: int = 3
    ) -> SentinelGroup:
        """Start a master, its replicas and the sentinels watching them; return once failover is possible.

        That is: every replica is in sync and every sentinel knows every replica and every other sentinel.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            group = SentinelGroup(password, sentinel_password)
            self.group = group
            try:
                self._start_group(group, replicas, sentinels)
                break
            except _PortTaken:  # another program took a port between its choice and its use
                for name in [*group.nodes, *group.sentinels]:
                    proc = self.procs.pop(name, None)
                    if proc is not None and proc.poll() is None:
                        proc.kill()
                        proc.wait()
                if attempt == START_ATTEMPTS:
                    raise
        master_port = group.nodes["redis"]
        self.env.update(
            {
                "INFER_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in group.sentinels.values()),
                "INFER_REDIS_MASTER_NAME": MASTER_NAME,
                "INFER_REDIS_PASSWORD": password,
                "INFER_REDIS_SENTINEL_PASSWORD": sentinel_password,
                # What a tool that knows no Sentinel reaches: the first master.
                "INFER_REDIS_URL": f"redis://:{password}@127.0.0.1:{master_port}/0",
            }
        )
        return group

    def _start_group(self, group: SentinelGroup, replicas: int, sentinels: int) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed: run 'make redis' or install it")
        password, sentinel_password = group.password, group.sentinel_password
        names = ["redis"] + [f"redis-replica-{i}" for i in range(1, replicas + 1)]
        ports = _free_ports(len(names) + sentinels)
        group.nodes.update(zip(names, ports, strict=False))
        group.sentinels.update((f"sentinel-{i}", ports[len(names) + i - 1]) for i in range(1, sentinels + 1))
        master_port = group.nodes["redis"]
        for name, port in group.nodes.items():
            data = self.run_dir / name
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
            config = {"port": str(port), "bind": "127.0.0.1", "dir": str(data), "appendonly": "yes",
                      "save": "", "maxmemory": REDIS_MAXMEMORY, "maxmemory-policy": "noeviction",
                      "requirepass": password, "masterauth": password,
                      "repl-diskless-sync-delay": "0"}  # fmt: skip
            replica = [f"replicaof 127.0.0.1 {master_port}"] if name != "redis" else []
            self._spawn(name, [server, self._config(name, config, replica)])
        # Each sentinel is told its peers and the replicas, which it would otherwise learn within
        # some 10 s (hello messages every 2 s, the master's INFO every 10 s).
        ids = {name: secrets.token_hex(20) for name in group.sentinels}
        for name, port in group.sentinels.items():
            lines = {"port": str(port), "bind": "127.0.0.1", "dir": str(self.run_dir),
                     "requirepass": sentinel_password}  # fmt: skip
            monitor = [
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {sentinels // 2 + 1}",
                f"sentinel auth-pass {MASTER_NAME} {_redis_quoted(password)}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER_NAME} {replicas}",
                f"sentinel sentinel-pass {_redis_quoted(sentinel_password)}",
                f"sentinel myid {ids[name]}",
                *(f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {group.nodes[n]}" for n in names[1:]),
                *(f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {p} {ids[n]}"
                  for n, p in group.sentinels.items() if n != name),
            ]  # fmt: skip
            self._spawn(name, [_sentinel_program(), self._config(name, lines, monitor)])
        ready = functools.partial(self._monitoring, group, replicas, sentinels)
        wait_until(ready, READY_S, "the sentinels and replicas")

    def _config(self, name: str, settings: dict[str, str], lines: list[str] | None = None) -> str:
        """Write a config file only this user can read (it holds passwords) and return its path."""
        path = self.run_dir / f"{name}.conf"
        text = "".join(f"{key} {_redis_quoted(value)}\n" for key, value in settings.items())
        write_private(path, text + "".join(f"{line}\n" for line in lines or []))
        return str(path)

    def _monitoring(self, group: SentinelGroup, replicas: int, sentinels: int) -> bool:
        for name in [*group.nodes, *group.sentinels]:
            if self.procs[name].poll() is not None:
                raise _PortTaken(f"{name} exited at start: see {self.run_dir / name}.log")
        try:
            for name in group.nodes:
                if name != "redis" and group.node(name).info("replication").get("master_link_status") != "up":
                    return False
            for name in group.sentinels:
                state = cast(dict[str, Any], group.sentinel(name).sentinel_master(MASTER_NAME))
                if int(state["num-slaves"]) < replicas or int(state["num-other-sentinels"]) < sentinels - 1:
                    return False
        except (redis.RedisError, KeyError, TypeError, ValueError):
            return False
        return True

    def kill_master(self) -> str:
        """SIGKILL the Redis node the sentinels call master now and return its name."""
        assert self.group is not None, "start_sentinel_redis first"
        name = self.group.master()
        if name is None:
            raise RuntimeError("the sentinels agree on no master")
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return name
