#!/usr/bin/env bash
# The test command: lint, type-check, the layering contract, then the whole pytest suite
# (slow fault tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m ruff check .
"$PYTHON" -m mypy
# the layering contract (pyproject.toml, [tool.importlinter]); run with the checkout on sys.path
"$PYTHON" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
# pytest exits 5 when it collected no test: that must fail, and it does (set -e).
"$PYTHON" -m pytest "$@"
