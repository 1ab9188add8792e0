#!/usr/bin/env bash
# Regenerate the README screenshots in docs/ from the real widgets on a phantom, under Xvfb.
# Uses the demo's trained model (demo-out/model.pnxmodel), running the demo first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
MODEL=${1:-demo-out/model.pnxmodel}
if [ ! -f "$MODEL" ]; then
  pneumoseg demo --out "$(dirname "$MODEL")"
fi
export XDG_CONFIG_HOME="$(mktemp -d)"  # keep napari's and our preferences out of $HOME
xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py "$MODEL" --out docs
