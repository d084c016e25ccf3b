#!/usr/bin/env bash
# Sets up the environment of benchmarks/compare_pythae.py: a virtual environment of its own
# (default benchmarks/.venv-pythae, or the first argument) holding pythae and vaekit from this
# repository (editable). pythae is a benchmark-only dependency: it never goes into
# pyproject.toml, and it never enters the development environment in .venv. Safe to run again.
#
#   bash benchmarks/setup_pythae_env.sh
#   benchmarks/.venv-pythae/bin/python benchmarks/compare_pythae.py --tiny --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-benchmarks/.venv-pythae}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e . pythae
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version

import torch  # noqa: F401  (fails here, not in the benchmark, if the stack does not import)
import pythae.models  # noqa: F401
import pythae.pipelines  # noqa: F401
import vaekit  # noqa: F401

print("pythae environment ready: " + ", ".join(
    f"{name} {version(name)}" for name in ("pythae", "vaekit", "torch", "numpy", "pydantic")
))
PY
