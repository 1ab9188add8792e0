#!/usr/bin/env bash
# Set everything up and run the main job on the bundled real chest CT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
CT=${1:-../shared/data/real/chest_ct_tcia_A0001_5mm}
exec pneumoseg info "$CT"
