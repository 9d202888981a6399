#!/bin/bash
# Cloud TPU pod slice: run launch/train.py on every worker VM at once.
#
# UNTESTED on a real TPU pod (none was available to this project); the multi-process code path
# is tested on localhost with 2 processes x 2 CPU devices (tests/test_multihost*.py).
#
# Usage, from a machine with gcloud configured, for an existing slice (e.g. v4-32: 4 worker VMs,
# 16 chips) whose workers all have this repository at $REMOTE_DIR and its requirements plus
# jax[tpu] installed:
#   TPU_NAME=my-v4-32 ZONE=us-central2-b CONFIG=configs/style_improved.py \
#   WORKDIR=/mnt/shared/runs/style_improved launch/tpu_pod_train.sh --config.data.batch_size=1024
# Add DRY_RUN=1 to print the gcloud command instead of running it.
#
# What happens: gcloud runs the same command on all workers (--worker=all). --multiprocess makes
# maybe_initialize call jax.distributed.initialize() with no arguments; JAX reads the worker list,
# this worker's id and the coordinator (worker 0) from the TPU VM metadata. Worker 0 prints
#   task=... parallel=jit devices=16 (TPU v4) processes=4 global_batch=1024 ...
# and writes the logs and eval.json; all workers write their part of each checkpoint.
#
# Requirements:
# * WORKDIR must be on storage every worker sees at the same path (an NFS/Filestore mount, or a
#   gcsfuse mount of a bucket): the engine writes it with ordinary file I/O; gs:// URLs are not
#   supported by the engine's log/JSON writers.
# * The dataset prepared once beforehand and reachable from every worker (--config.data.data_dir).
# * config.data.batch_size is the global batch and must divide by the number of TPU chips.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG=configs/<model>.py}"
: "${WORKDIR:?set WORKDIR=/shared/path}"
REMOTE_DIR=${REMOTE_DIR:-'~/d2m-jax'}
PYTHON=${PYTHON:-python3}

quoted=""
for arg in "$@"; do quoted+=" $(printf '%q' "$arg")"; done
remote="cd $REMOTE_DIR && TF_CPP_MIN_LOG_LEVEL=2 $PYTHON launch/train.py \
--config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR") --multiprocess$quoted"

cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$remote")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
