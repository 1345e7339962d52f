"""The pool's workers as ``python -m inferpool worker`` child processes, configured the way
``inferpool up`` configures them (INFERPOOL_* variables), each with its JSON log in a file.

A worker is ready once its log holds a ``rebalance.assigned`` event; when every worker has
logged one, the group's last rebalance is over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferpool.embedded import TANSU_CLIENT_SETTINGS
from inferpool.settings import InferpoolSettings, settings_environment

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_environment(
    settings: InferpoolSettings, threads: int, models_file: Path | None
) -> dict[str, str]:
    """What a worker reads: the harness's settings as INFERPOOL_* variables (as in
    ``inferpool up``), nothing inherited from the caller's own INFERPOOL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
    worker = settings.model_copy(update={
        "torch_threads": threads,
        "log_level": "info",
        "log_format": "json",
        **TANSU_CLIENT_SETTINGS,
        # several workers on one host: never a fixed metrics port
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "models_file": models_file if models_file is not None else settings.models_file,
    })
    env.update(settings_environment(worker))
    return env


def write_models_file(path: Path, model: str, precision: str, max_batch_size: int) -> Path:
    path.write_text(
        "[[models]]\n"
        f'name = "{model}"\nloader = "{model}"\n'
        f'quantization = "{precision}"\ndevice = "cpu"\nmax_batch_size = {max_batch_size}\n',
        encoding="utf-8",
    )
    return path


class PoolWorkers:
    """``count`` worker processes; ``with`` starts them and waits until all have joined."""

    def __init__(
        self, settings: InferpoolSettings, count: int, threads: int, logdir: Path,
        models_file: Path | None = None, name: str = "worker", profile: bool = False,
    ) -> None:
        self.count = count
        self.threads = threads
        self.logdir = logdir
        self.name = name
        self.profile_paths = [logdir / f"{name}-{i}.prof" for i in range(count)]
        self._profile = profile
        self._env = worker_environment(settings, threads, models_file)
        self._drain_timeout_s = settings.drain_timeout_s
        self.processes: list[subprocess.Popen[bytes]] = []

    def log_path(self, index: int) -> Path:
        return self.logdir / f"{self.name}-{index}.log"

    def start(self, timeout_s: float = 240.0) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            command = [sys.executable, "-m", "inferpool", "worker"]
            if self._profile:  # the same worker, its event-loop thread under cProfile
                command = [sys.executable, "-m", "ops.bench.echo", "--profiled-worker",
                           str(self.profile_paths[index])]
            with self.log_path(index).open("wb") as log:
                self.processes.append(subprocess.Popen(
                    command, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT, start_new_session=True,
                ))
        self._wait_joined(timeout_s)

    def _wait_joined(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = set(range(self.count))
        while waiting:
            for index in sorted(waiting):
                if self.processes[index].poll() is not None:
                    raise RuntimeError(f"{self.name} {index} exited at start:\n"
                                       f"{self.log_tail(index)}")
                if any(e.get("event") == "rebalance.assigned" for e in self.events(index)):
                    waiting.discard(index)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}s {sorted(waiting)} did not join within "
                                   f"{timeout_s:.0f}s; logs in {self.logdir}")
            time.sleep(0.1)

    def events(self, index: int) -> list[dict[str, Any]]:
        found = []
        with contextlib.suppress(OSError):
            for line in self.log_path(index).read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        found.append(event)
        return found

    def first_event(self, name: str) -> dict[str, Any] | None:
        for index in range(self.count):
            for event in self.events(index):
                if event.get("event") == name:
                    return event
        return None

    def log_tail(self, index: int, lines: int = 30) -> str:
        try:
            text = self.log_path(index).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the workers meanwhile (shorter than the session timeout): idle workers
        still poll the broker, and neither they nor the broker should take CPU from what is
        measured meanwhile."""
        self.signal_all(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal_all(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (a worker drains, commits and leaves), then wait; SIGKILL if stuck."""
        self.signal_all(signal.SIGCONT)
        self.signal_all(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(self._drain_timeout_s + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    @contextlib.contextmanager
    def running(self) -> Iterator[PoolWorkers]:
        try:
            self.start()
            yield self
        finally:
            self.stop()
