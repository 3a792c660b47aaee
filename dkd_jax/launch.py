"""Entry point: `python -m dkd_jax.launch --config=configs/X.py[:arg] [--config.a.b=v] [--workdir=DIR]`.

Parses flags (the config is locked: a typo'd override fails), joins a multi-host
TPU slice when there is one, and hands over to `run.run`. A workdir that already
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


def _maybe_distributed():
  # Multi-host TPU VMs set these; a single CPU/GPU host must not block on a coordinator.
  if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    import jax
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)   # orbax logs every file op at INFO
  _maybe_distributed()
  from dkd_jax import run   # after distributed init: importing jax devices must wait
  run.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
