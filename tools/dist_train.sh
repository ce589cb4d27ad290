#!/usr/bin/env bash
# Distributed training with torchrun: gloo on CPU machines, nccl on GPUs (chosen by tools/train.py).
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py arguments...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS (default 1).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NUM_PROCS [tools/train.py arguments...]" >&2
  exit 2
fi
CONFIG=$1
NPROCS=$2
shift 2
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$NPROCS" "$CONFIG" --launcher pytorch "$@"
