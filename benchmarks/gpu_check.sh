#!/usr/bin/env bash
# The GPU check in one go (docs/gpu.md): no download, no install; about 3 minutes on one H100, under 8.
#
#   bash benchmarks/gpu_check.sh                 # CUDA; writes the table into docs/gpu.md
#   bash benchmarks/gpu_check.sh --out FILE      # ... into FILE instead
#   bash benchmarks/gpu_check.sh --cpu-smoke     # a tiny model on the CPU (what the tests run); writes
#                                                # nothing unless --out is given
#
# Other arguments go to benchmarks/gpu_check.py (--help lists them). GPU_CHECK_TIMEOUT (seconds, default
# 480) is the hard limit; the Python keeps to a soft budget below it (--budget-s) and writes the table
# after each model size, so a run cut short still leaves what it measured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
cd "$ROOT"

cpu=0
for a in "$@"; do
  [[ "$a" == "--cpu-smoke" ]] && cpu=1
done
if [[ $cpu == 0 ]] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch (pass --cpu-smoke to run the tiny CPU version)" >&2
  exit 2
fi

export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh${*:+ $*}"
rc=0
timeout --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@" || rc=$?
if [[ $rc == 124 || $rc == 137 ]]; then
  echo "gpu_check: stopped after ${GPU_CHECK_TIMEOUT:-480} s; the table holds the model sizes finished by then" >&2
fi
exit $rc
