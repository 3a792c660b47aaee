"""Every random stream of a run, derived from `config.seed` by name.

A key is `fold_in(fold_in(key(seed), STREAMS[name]), step)`: streams never share a
key, a stream's keys never repeat across steps, and adding a stream never shifts the
others (the ids are fixed, not positions). Host-side numpy generators and the integer
seeds some APIs want (grain shuffles, model init) come from the same keys, so one
table says where every random number of a run comes from.
"""

from __future__ import annotations

import jax
import numpy as np

# Stream ids are part of a run's identity (changing one changes its numbers): append
# new streams with new ids, never renumber.
STREAMS = {
  "student_rollout": 1,  # student-prefix rollouts (per step)
  "teacher_rollout": 2,  # teacher-prefix rollouts (per step)
  "prefix_rows": 3,  # which rows of a mixed batch take student prefixes (per step)
  "train_step": 4,  # in-step sampling (sampled-token actions on teacher rows)
  "eval_rollout": 5,  # evaluation samples
  "student_init": 6,  # random student init
  "teacher_init": 7,  # bootstrapped teacher init
  "train_shuffle": 8,  # grain shuffle of the training records
  "bootstrap_shuffle": 9,  # grain shuffle of the teacher bootstrap's batches
  "train_problems": 10,  # the embedded task's training problems
  "eval_problems": 11,  # the embedded task's held-out problems
  "heldout_kl": 12,  # the one fixed set of teacher responses for held-out KL
  "curriculum_reference": 13,  # teacher rollouts measuring the gate's reference entropy
  "rl_rollout": 14,  # GRPO group rollouts (per RL step; seeded by config.rl.seed)
  "rl_shuffle": 15,  # GRPO prompt order (seeded by config.rl.seed)
  "rl_resample": 16,  # GRPO dynamic sampling's extra draws (per RL step, then per draw)
  "warm_start_problems": 17,  # the student warm start's own problem split (runs.warm_start)
  "warm_start_shuffle": 18,  # the student warm start's batch order
}


def _stream_id(name: str) -> int:
  if name not in STREAMS:
    raise KeyError(f"unknown random stream {name!r}; known: {sorted(STREAMS)}")
  return STREAMS[name]


def key(seed: int, name: str, step: int = 0) -> jax.Array:
  """The typed PRNG key of stream `name` at `step`."""
  base = jax.random.fold_in(jax.random.key(int(seed)), _stream_id(name))
  return jax.random.fold_in(base, int(step))


def key_data(seed: int, name: str, step: int = 0) -> np.ndarray:
  """uint32 [2] raw key data (for host batches that cross into jit as arrays)."""
  return np.asarray(jax.random.key_data(key(seed, name, step)))


def int_seed(seed: int, name: str, step: int = 0) -> int:
  """A non-negative int31 seed for APIs that take an int (grain, init, numpy)."""
  return int(key_data(seed, name, step)[-1] & 0x7FFFFFFF)


def numpy_rng(seed: int, name: str, step: int = 0) -> np.random.Generator:
  """A host numpy generator seeded from the stream's key (all 64 key bits)."""
  return np.random.default_rng(key_data(seed, name, step).astype(np.uint64))
