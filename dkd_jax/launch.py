"""Entry point: `python -m dkd_jax.launch --config=configs/X.py[:arg] [--config.a.b=v]
[--workdir=DIR]`.

Parses flags (the config is locked: a typo'd override fails), joins a multi-process
run when there is one, and hands over to `run.run` (or `rl_run.run` for a config with an
`rl` block). A workdir that already holds checkpoints is resumed.

Multi-process runs (one JAX process per host, all running this same command):
- a Cloud TPU VM slice is detected from its metadata: nothing to pass;
- elsewhere (CPU hosts, GPU clusters, a CPU test on localhost) name the coordinator,
  the process count and this process's id: `--coordinator=HOST:PORT --num_processes=N
  --process_id=I`, or the environment variables JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU processes exchange collectives over gloo.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", "runs/default", "Checkpoints, logs and results (a local path or gs://...)."
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume a workdir's checkpoints under a config that differs from the saved one.",
)
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "jax.distributed.initialize(): 'auto' when a multi-host environment is detected or "
  "--coordinator is given.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator",
  os.environ.get("JAX_COORDINATOR_ADDRESS"),
  "HOST:PORT of process 0's coordinator service (default $JAX_COORDINATOR_ADDRESS; "
  "not needed on a TPU slice).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes",
  int(os.environ.get("JAX_NUM_PROCESSES", 0)) or None,
  "Number of processes of the run (default $JAX_NUM_PROCESSES).",
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id",
  int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
  "This process's id in [0, num_processes) (default $JAX_PROCESS_ID).",
)

# Set on Cloud TPU VM slices / by multi-host launchers; absent on a single CPU/GPU host,
# which must not block waiting for a coordinator.
_MULTIHOST_ENV = (
  "TPU_WORKER_HOSTNAMES",
  "TPU_WORKER_ID",
  "CLOUD_TPU_TASK_ID",
  "MEGASCALE_COORDINATOR_ADDRESS",
  "JAX_COORDINATOR_ADDRESS",
)


def _maybe_distributed() -> None:
  mode = _DISTRIBUTED.value
  explicit = _COORDINATOR.value is not None
  if mode == "off" or not (
    mode == "on" or explicit or any(os.environ.get(k) for k in _MULTIHOST_ENV)
  ):
    return
  if explicit and (_NUM_PROCESSES.value is None or _PROCESS_ID.value is None):
    raise app.UsageError(
      "--coordinator needs --num_processes and --process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)"
    )
  import jax

  # CPU processes need a cross-process collectives backend; GPU/TPU ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  else:
    jax.distributed.initialize()


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file op at INFO
  # Before JAX starts: JAX_PLATFORMS=cpu when unset on a machine with no TPU or GPU, so
  # an installed libtpu neither probes for chips nor takes its machine-wide lock.
  from dkd_jax.core import platforms

  platforms.prefer_cpu_without_accelerator()
  _maybe_distributed()
  # After distributed init: importing jax devices must wait. A config with an `rl`
  # block (configs/grpo.py) is a GRPO run; every other config is a distillation run.
  from dkd_jax.core import checkpointing
  from dkd_jax.core import metrics_log
  from dkd_jax.core import paths
  from dkd_jax.data import sources

  # Faults a user fixes (a full disk, bad data, a diverged run) end in one line, exit 1.
  one_line = (
    paths.WorkdirError,
    checkpointing.CheckpointWriteError,
    metrics_log.NonFiniteMetric,
    sources.DataError,
  )
  try:
    if "rl" in _CONFIG.value:
      from dkd_jax.runs import rl_loop as rl_run

      rl_run.run(_CONFIG.value, _WORKDIR.value)
    else:
      from dkd_jax.runs import distill_loop as run

      run.run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except one_line as e:
    if not getattr(e, "logged", False):
      print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
