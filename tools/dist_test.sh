#!/usr/bin/env bash
# Distributed evaluation with torchrun: gloo on CPU machines, nccl on GPUs (chosen by tools/test.py).
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py arguments...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS (default 1).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [tools/test.py arguments...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROCS=$3
shift 3
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$NPROCS" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
