#!/usr/bin/env bash
# Set everything up, then run the main job end to end on phantoms (about 10 minutes on a
# 2-core CPU): write a phantom dataset, train, segment a held-out phantom, measure it.
# Extra arguments go to `pneumoseg demo` (e.g. --out DIR, --quick, --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
exec pneumoseg demo "$@"
