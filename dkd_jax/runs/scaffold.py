"""What the distillation and GRPO loops both stand on: the student's optimizer and
sharded train state, its generation engine, the run's checkpointer, and the resume.

`build` makes them once from the run's config and the loaded pair; `Scaffold.restore`
puts the latest intact checkpoint of WORKDIR/checkpoints into the state and hands back
its host record (each loop restores its own iterator, schedules and counters from it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections as mlc
import optax
from jax.sharding import Mesh

from dkd_jax.core import checkpointing
from dkd_jax.evals import harness
from dkd_jax.generate import engine as engine_lib
from dkd_jax.models import decoder as model_lib
from dkd_jax.runs import configuration
from dkd_jax.runs import workdir as run_dir
from dkd_jax.train import step as train


@dataclasses.dataclass
class Scaffold:
  optimizer: optax.GradientTransformation
  state: dict  # {"step", "params", "opt_state"} in state_shard
  state_shard: dict
  engine: engine_lib.Engine  # the student's, its params sharded like the train state's
  ckpt: checkpointing.RunCheckpointer
  make_engine: Callable[..., engine_lib.Engine]  # (cfg, graphdef, params_shard=) -> Engine

  def restore(self, log: Callable[[str], None]) -> dict | None:
    """Restores the latest intact checkpoint into `state`; its host record, or None when
    the run directory has no checkpoint yet."""
    out = self.ckpt.restore(self.state, log=log)
    if out is None:
      return None
    self.state, host = out
    return host


def build(
  c: mlc.ConfigDict,
  mesh: Mesh,
  student_cfg: model_lib.ModelConfig,
  student_graphdef: object,
  params: dict,
  workdir: str,
  *,
  optimizer_steps: int,
  slots: int,
  max_new: int,
  eos_id: int,
) -> Scaffold:
  """The optimizer (schedule over `optimizer_steps` updates), the train state initialised
  from `params` in its shardings, the student's engine (`slots` rows, `max_new` tokens),
  and the checkpointer of WORKDIR/checkpoints."""
  data = configuration.data_settings(c)
  optimizer = train.make_optimizer(c.optim, optimizer_steps)
  state, state_shard = train.sharded_init_state(optimizer, mesh, student_cfg, params)

  def make_engine(
    cfg: model_lib.ModelConfig, graphdef: object, *, params_shard: dict, eos: int | None = None
  ) -> engine_lib.Engine:
    """An engine like the student's; `eos` for a model with another tokenizer."""
    return harness.make_engine(
      cfg,
      graphdef,
      mesh,
      slots=slots,
      max_prompt_len=data.max_prompt_len,
      max_new=max_new,
      eos_id=eos_id if eos is None else eos,
      params_shard=params_shard,
    )

  ckpt = checkpointing.RunCheckpointer(
    run_dir.checkpoint_dir(workdir), every=c.train.ckpt_every, max_to_keep=c.train.max_ckpts
  )
  engine = make_engine(student_cfg, student_graphdef, params_shard=state_shard["params"])
  return Scaffold(optimizer, state, state_shard, engine, ckpt, make_engine)
