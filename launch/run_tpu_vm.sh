#!/usr/bin/env bash
# Runs a dkd_jax config on every worker of a Cloud TPU VM slice.
#
#   launch/run_tpu_vm.sh TPU_NAME ZONE configs/rev_student.py gs://bucket/run1 [--config.x=y ...]
#
# Each worker installs the package from this checkout (copied with `gcloud ... scp`)
# and starts the same command; dkd_jax.launch calls jax.distributed.initialize(),
# which discovers the slice's coordinator from the TPU metadata. The workdir must be
# shared storage (a GCS bucket) so every host sees the same checkpoints on resume.
set -euo pipefail
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=dkd_jax_src

gcloud compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all \
  "$(git rev-parse --show-toplevel)" "$TPU_NAME:~/$REPO_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  cd ~/$REPO_DIR
  python3 -m pip install -q 'jax[tpu]' -e .
  python3 -m dkd_jax.launch --distributed=on --config=$CONFIG --workdir=$WORKDIR $*
"
