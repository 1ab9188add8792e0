#!/usr/bin/env bash
# Set everything up (Debian libraries, .venv, the package) and run the whole test suite.
#
# Two pytest processes, on purpose: TensorFlow and napari's OpenGL drawing cannot share a
# process on Mesa (importing TF after a viewer has drawn segfaults), exactly as in napari
# itself, where the network runs in the engine process. So the core tests (which import
# TensorFlow) and the GUI tests (tests/_napari, under Xvfb via pytest-xvfb, PyQt6) run apart.
# Extra arguments go to both runs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# shellcheck disable=SC1091
. .venv/bin/activate
export QT_API=pyqt6

python -m pytest tests --ignore=tests/_napari "$@"
core=$?
python -m pytest tests/_napari "$@"
gui=$?
echo "core tests exit code: $core; GUI tests exit code: $gui"
[ "$core" -eq 0 ] && [ "$gui" -eq 0 ]
