"""Entry point: `python -m dkd_jax.launch --config=configs/X.py[:arg] [--config.a.b=v] [--workdir=DIR]`.

Parses flags (the config is locked: a typo'd override fails), joins a multi-host
TPU slice when there is one, and hands over to `run.run` (or `rl_run.run` for a
config with an `rl` block). A workdir that already
holds checkpoints is resumed.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Checkpoints, logs and results.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir's checkpoints under a config that differs from the saved one.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "jax.distributed.initialize(): 'auto' when a multi-host environment is detected.")

# Set on Cloud TPU VM slices / by multi-host launchers; absent on a single CPU/GPU host,
# which must not block waiting for a coordinator.
_MULTIHOST_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID",
                  "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")


def _maybe_distributed():
  mode = _DISTRIBUTED.value
  if mode == "on" or (mode == "auto" and any(os.environ.get(k) for k in _MULTIHOST_ENV)):
    import jax
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)   # orbax logs every file op at INFO
  _maybe_distributed()
  # After distributed init: importing jax devices must wait. A config with an `rl`
  # block (configs/grpo.py) is a GRPO run; every other config is a distillation run.
  if "rl" in _CONFIG.value:
    from dkd_jax import rl_run
    rl_run.run(_CONFIG.value, _WORKDIR.value)
  else:
    from dkd_jax import run
    run.run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
