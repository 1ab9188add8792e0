#!/usr/bin/env bash
# Set everything up (Debian libraries, .venv, the package) and run the whole test suite.
#
# Two pytest processes, on purpose: TensorFlow and napari's OpenGL drawing cannot share a
# process on Mesa (importing TF after a viewer has drawn segfaults), exactly as in napari
# itself, where the network runs in the engine process. So the core tests (which import
# TensorFlow) and the GUI tests (tests/_napari, under Xvfb via pytest-xvfb, PyQt6) run apart.
# Extra arguments go to both runs.
#
# `--core ARGS` / `--gui ARGS` run only that pytest process with the `python` on PATH, with
# no set-up: tox.ini's test env runs these, so the two command lines live only here.
set -uo pipefail
cd "$(dirname "$0")/.."
export QT_API=pyqt6

core_tests() { python -m pytest tests --ignore=tests/_napari "$@"; }
gui_tests() { python -m pytest tests/_napari "$@"; }

case "${1:-}" in
  --core) shift; core_tests "$@"; exit ;;
  --gui) shift; gui_tests "$@"; exit ;;
esac

bash scripts/setup.sh || exit 1
# shellcheck disable=SC1091
. .venv/bin/activate

core_tests "$@"
core=$?
gui_tests "$@"
gui=$?
echo "core tests exit code: $core; GUI tests exit code: $gui"
[ "$core" -eq 0 ] && [ "$gui" -eq 0 ]
