#!/usr/bin/env bash
# Train on N processes (GPUs, or CPU processes with Gloo):  scripts/dist_train.sh N OPTIONS.yml [train.py flags]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 NUM_PROCESSES OPTIONS.yml [--auto_resume] [--force_yml ...]" >&2
    exit 2
fi
NPROC=$1
OPT=$2
shift 2
cd "$(dirname "$0")/.."
exec torchrun --standalone --nproc_per_node="$NPROC" train.py -opt "$OPT" --launcher pytorch "$@"
