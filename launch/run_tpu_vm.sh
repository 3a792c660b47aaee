#!/usr/bin/env bash
# Runs a dkd_jax config on every worker of a Cloud TPU VM slice.
#
#   launch/run_tpu_vm.sh TPU_NAME ZONE configs/rev_student.py gs://bucket/run1 [--config.x=y ...]
#
# Each worker installs the package from this checkout (copied with `gcloud ... scp`) at
# the versions BUILD_NOTES.md records, prints a preflight (its process index, the
# slice's process and device counts), then starts the same command; dkd_jax.launch
# calls jax.distributed.initialize(), which discovers the slice's coordinator from the
# TPU metadata (no --coordinator needed). The workdir must be shared storage (a GCS
# bucket) so every host sees the same checkpoints on resume; process 0 writes the logs.
#
# Before training, worker 0 compiles the run for this slice ahead of time
# (`python -m dkd_jax.aot --require_fit`, the slice's accelerator type read from gcloud):
# a run that does not fit its HBM stops here with its table row, before any host loads a
# weight. DKD_SKIP_COMPILE_CHECK=1 skips the check; DKD_TOPOLOGY=v5e-16 names the slice
# when gcloud cannot describe it.
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=dkd_jax_src

# Versions from BUILD_NOTES.md ("Versions that resolved"); jax[tpu] brings the matching libtpu.
PINS=(
  "jax[tpu]==0.10.2" "flax==0.12.8" "optax==0.2.8" "orbax-checkpoint==0.12.8"
  "grain==0.2.18" "tensorflow-datasets==4.9.10" "array-record==0.8.6"
  "ml-collections==1.1.0" "absl-py==2.5.1" "tensorboardX==2.6.5" "safetensors==0.8.0"
  "tokenizers==0.23.3" "gguf==0.19.0" "math-verify==0.9.0" "jinja2==3.1.6"
  "numpy==2.4.6" "tqdm==4.70.1" "matplotlib==3.11.2"
)

# Every argument is quoted for the remote shell (printf %q), so spaces and globs survive.
q() { printf '%q ' "$@"; }
INSTALL="python3 -m pip install -q $(q "${PINS[@]}") -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && python3 -m pip install -q --no-deps -e ."
PREFLIGHT="python3 -c $(q 'import jax; jax.distributed.initialize(); print(f"preflight: process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local / {jax.device_count()} devices ({jax.devices()[0].device_kind})", flush=True)')"
RUN="python3 -m dkd_jax.launch --distributed=on $(q "--config=$CONFIG" "--workdir=$WORKDIR" "$@")"

TOPOLOGY=${DKD_TOPOLOGY:-$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
  --format='value(acceleratorType)' 2>/dev/null || true)}
# The compile check: every function the run jits, compiled for this slice's topology on
# worker 0's CPU (libtpu's compiler; the chips stay free); exit 3 = it does not fit.
CHECK="python3 -m dkd_jax.aot $(q "--config=$CONFIG" "--topology=$TOPOLOGY" "$@") --only=train,rollout,topk --require_fit --out=/tmp/dkd_aot.json > /tmp/dkd_aot.log 2>&1; rc=\$?; grep -v '^{' /tmp/dkd_aot.log | tail -n 25; if [ \$rc -eq 3 ]; then echo \"compile check: the run does not fit $TOPOLOGY:\"; python3 -c 'import json; r = json.load(open(\"/tmp/dkd_aot.json\")); print(json.dumps(r[\"row\"]))'; fi; exit \$rc"

gcloud compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all \
  "$(git rev-parse --show-toplevel)" "$TPU_NAME:~/$REPO_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  cd ~/$REPO_DIR
  $INSTALL
"
if [ "${DKD_SKIP_COMPILE_CHECK:-0}" != 1 ]; then
  if [ -z "$TOPOLOGY" ]; then
    echo "compile check: cannot read $TPU_NAME's accelerator type; set DKD_TOPOLOGY=v5e-16" \
      "(or DKD_SKIP_COMPILE_CHECK=1)" >&2
    exit 2
  fi
  set +e
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=0 --command "
    cd ~/$REPO_DIR
    $CHECK
  "
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "compile check failed (exit $rc): not starting the run on $TOPOLOGY" >&2
    exit "$rc"
  fi
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  cd ~/$REPO_DIR
  $PREFLIGHT
  $RUN
"
