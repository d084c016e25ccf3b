#!/usr/bin/env bash
# Runs everything CI checks: lint, format, types, the docs build and the test suite.
# VAEKIT_TEST_DEVICE=cuda bash scripts/test.sh runs the same tests on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
if [ -f mkdocs.yml ]; then .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"; fi
.venv/bin/python -m pytest -n 2 "$@"
