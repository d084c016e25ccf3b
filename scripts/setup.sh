#!/usr/bin/env bash
# Sets vaekit up for development on a fresh machine: a virtual environment in .venv with
# vaekit installed editable and every extra, plus the offline Fashion-MNIST files when
# apt-get is available (Debian/Ubuntu as root). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,plots,tensorboard,docs]"
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will fail" >&2
fi
echo "vaekit is set up: .venv/bin/python -c 'import vaekit'"
