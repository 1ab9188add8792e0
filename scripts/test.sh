#!/usr/bin/env bash
# Set everything up (Debian libraries, .venv, the package) and run the whole test suite.
# GUI tests run under a real X server (Xvfb, started by pytest-xvfb) with PyQt6.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export QT_API=pyqt6
exec python -m pytest "$@"
