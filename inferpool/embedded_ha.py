"""Highly available Redis on loopback, for tests and benchmarks: a Redis Cluster and a
Sentinel-managed primary with a replica.

``EmbeddedRedisCluster`` starts ``primaries * (1 + replicas)`` ``redis-server
--cluster-enabled yes`` nodes and joins them with ``redis-cli --cluster create``;
``EmbeddedSentinel`` starts a primary, its replica and one sentinel (quorum 1) that fails
the primary over. Both wait until the deployment serves (every slot covered, every replica
in sync, the sentinel knowing the replica), administer it with ``redis-cli``, and name it by
the URL form ``INFERPOOL_REDIS_URL`` takes for it. Everything runs on free loopback ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from inferpool.embedded import (
    LOOPBACK,
    EmbeddedProcess,
    EmbeddedRedis,
    redis_binary,
)
from inferpool.errors import ConfigurationError, InferpoolError
from inferpool.lifecycle import SyncService

POLL_S = 0.05


def redis_cli(port: int, *args: str, timeout_s: float = 10.0) -> str:
    """``redis-cli -p port args...``'s output (raises if it fails)."""
    binary = shutil.which("redis-cli")
    if binary is None:
        raise ConfigurationError("redis-cli is needed for a cluster or sentinel: apt-get "
                                 "install redis-tools (or redis-server)")
    done = subprocess.run([binary, "-h", LOOPBACK, "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout_s, check=True)
    return done.stdout


def info_field(port: int, section: str, name: str) -> str | None:
    """One field of ``INFO section`` (``CLUSTER INFO`` for section "cluster"); None if
    absent or the server does not answer."""
    command = ["CLUSTER", "INFO"] if section == "cluster" else ["INFO", section]
    try:
        text = redis_cli(port, *command, timeout_s=2)
    except (subprocess.SubprocessError, OSError):
        return None
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == name:
            return value
    return None


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise InferpoolError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)


def distinct_free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, all different (each held open until all are found)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


class ArgsRedis(EmbeddedRedis):
    """An EmbeddedRedis with more server arguments."""

    def __init__(
        self, extra: list[str], workdir: Path | None = None, port: int | None = None
    ) -> None:
        super().__init__(port=port, workdir=workdir)
        # a replica syncs at once (the default waits 5 s for more replicas to join)
        self.extra = ["--repl-diskless-sync-delay", "0", *extra]

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


class EmbeddedRedisCluster(SyncService):
    """A Redis Cluster; ``node_timeout_ms`` is how soon a dead primary's replica takes over."""

    def __init__(
        self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", str(node_timeout_ms)]
        # the bus port must be given: port + 10000, the default, may be past 65535
        count = primaries * (1 + replicas)
        ports = distinct_free_ports(2 * count)
        self.nodes = [ArgsRedis([*options, "--cluster-port", str(ports[count + n])], port=ports[n])
                      for n in range(count)]
        self.replicas = replicas

    @property
    def url(self) -> str:
        seeds = ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self, timeout_s: float = 60.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            redis_cli(self.nodes[0].port, "--cluster", "create", *addresses,
                      "--cluster-replicas", str(self.replicas), "--cluster-yes",
                      timeout_s=timeout_s)
            wait_for(self.healthy, timeout_s, "the cluster to cover every slot, in sync")
        except BaseException:
            self.stop()
            raise

    def live(self) -> list[ArgsRedis]:
        """The nodes not stopped (a node stopped or killed and reaped has no process)."""
        return [node for node in self.nodes if node._process is not None]

    def role(self, node: ArgsRedis) -> str | None:
        return info_field(node.port, "replication", "role")

    def primaries(self) -> list[ArgsRedis]:
        return [node for node in self.live() if self.role(node) == "master"]

    def replica_of(self, primary: ArgsRedis) -> ArgsRedis:
        for node in self.live():
            if info_field(node.port, "replication", "master_port") == str(primary.port):
                return node
        raise InferpoolError(f"no replica of the primary on port {primary.port}")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and every replica is in sync."""
        for node in self.live():
            if info_field(node.port, "cluster", "cluster_state") != "ok":
                return False
            if self.role(node) == "slave" and info_field(
                node.port, "replication", "master_link_status"
            ) != "up":
                return False
        return True

    def failover(self, replica: ArgsRedis, timeout_s: float = 30.0) -> None:
        """A manual ``CLUSTER FAILOVER``: the primary stops writes until the replica has
        caught up, then they swap roles; nothing acknowledged is lost."""
        redis_cli(replica.port, "CLUSTER", "FAILOVER")
        wait_for(lambda: self.role(replica) == "master", timeout_s, "the replica to take over")
        wait_for(self.healthy, timeout_s, "the cluster to settle after the failover")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- node {n.port} ---\n{n.log_tail(lines)}" for n in self.nodes)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class SentinelProcess(EmbeddedProcess):
    """One ``redis-server --sentinel`` watching ``service`` (quorum 1)."""

    name = "sentinel"

    def __init__(
        self, service: str, primary_port: int, down_after_ms: int, port: int | None = None
    ) -> None:
        super().__init__(port=port)
        self.service = service
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind {LOOPBACK}\ndir {self.workdir}\n"
            f"sentinel monitor {service} {LOOPBACK} {primary_port} 1\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 10000\n"
        )
        self.config = config

    def command(self) -> list[str]:
        return [str(redis_binary()), str(self.config), "--sentinel"]

    def ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedSentinel(SyncService):
    """A primary, one replica and a sentinel; ``url`` is the ``redis+sentinel://`` form."""

    def __init__(self, service: str = "inferpool", down_after_ms: int = 1000) -> None:
        self.service = service
        primary_port, replica_port, sentinel_port = distinct_free_ports(3)
        self.primary = ArgsRedis([], port=primary_port)
        self.replica = ArgsRedis(["--replicaof", LOOPBACK, str(primary_port)], port=replica_port)
        self.sentinel = SentinelProcess(service, primary_port, down_after_ms, sentinel_port)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{LOOPBACK}:{self.sentinel.port}/{self.service}/0"

    def start(self, timeout_s: float = 60.0) -> None:
        try:
            self.primary.start()
            self.replica.start()
            wait_for(lambda: info_field(self.replica.port, "replication", "master_link_status")
                     == "up", timeout_s, "the replica to sync")
            self.sentinel.start()
            wait_for(self._replica_known, timeout_s, "the sentinel to find the replica")
        except BaseException:
            self.stop()
            raise

    def _replica_known(self) -> bool:
        return str(self.replica.port) in redis_cli(
            self.sentinel.port, "SENTINEL", "REPLICAS", self.service
        )

    def primary_port(self) -> int:
        """Where the sentinel says the primary is now."""
        answer = redis_cli(self.sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                           self.service).split()
        return int(answer[1])

    def rejoin_as_replica(self, timeout_s: float = 30.0) -> None:
        """Start the (killed) first primary again as a replica of the promoted one, as an
        operator would, and wait until it is in sync."""
        self.primary.extra = [*self.primary.extra, "--replicaof", LOOPBACK, str(self.replica.port)]
        self.primary.start()
        wait_for(lambda: info_field(self.primary.port, "replication", "master_link_status")
                 == "up", timeout_s, "the old primary to sync as a replica")

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.primary):
            process.stop()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"--- {p.name} {p.port} ---\n{p.log_tail(lines)}"
                         for p in (self.primary, self.replica, self.sentinel))

    def cleanup(self) -> None:
        for process in (self.sentinel, self.replica, self.primary):
            process.cleanup()

