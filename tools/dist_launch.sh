#!/usr/bin/env bash
# Shared torchrun launcher of dist_train.sh and dist_test.sh; the tool itself picks gloo on CPU and
# nccl on GPUs. Usage: bash tools/dist_launch.sh TOOL.py NUM_PROCS [tool arguments, --launcher too]
set -euo pipefail
TOOL=$1
NPROCS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
if [ "$NNODES" -gt 1 ]; then
  # every node must name the same rendezvous: a random port per node would never meet
  for var in MASTER_ADDR PORT; do
    if [ -z "${!var:-}" ]; then
      echo "error: NNODES=$NNODES needs $var, the same on every node (MASTER_ADDR: node 0's" \
        "address that the other nodes can reach; PORT: a free port there)" >&2
      exit 2
    fi
  done
  if [ "$NODE_RANK" -ge "$NNODES" ]; then
    echo "error: NODE_RANK=$NODE_RANK must be below NNODES=$NNODES" >&2
    exit 2
  fi
fi
PORT=${PORT:-$((29500 + RANDOM % 1000))}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python; fi
fi
# one thread per process by default, so that N processes do not oversubscribe the cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --nproc_per_node="$NPROCS" --master_port="$PORT" \
  "$HERE/$TOOL" "$@"
