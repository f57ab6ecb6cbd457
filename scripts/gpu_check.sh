#!/usr/bin/env bash
# The GPU check of the fast training recipe (scripts/gpu_check.py): bash scripts/gpu_check.sh [--quick] [--cpu]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ -x "$root/.venv/bin/python" ]; then
    python="$root/.venv/bin/python"
fi
exec "$python" "$root/scripts/gpu_check.py" "$@"
