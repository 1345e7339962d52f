#!/usr/bin/env bash
# The test command: lint, type-check, then the whole pytest suite (slow fault tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m ruff check .
"$PYTHON" -m mypy
# pytest exits 5 when it collected no test: that must fail, and it does (set -e).
"$PYTHON" -m pytest "$@"
