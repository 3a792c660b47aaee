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


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_INT32 = range(-(2**31), 2**31)


def threefry2x32(k1, k2, x1, x2) -> tuple[np.ndarray, np.ndarray]:
  """Threefry-2x32 (20 rounds) in numpy uint32 arithmetic (broadcast): the bits of jax's
  `threefry2x32_p`, on the host. Deriving a key costs no device dispatch and no
  device-to-host copy (each `jax.random` call on the host did both)."""
  k1, k2, x1, x2 = (np.atleast_1d(np.asarray(a, np.uint32)) for a in (k1, k2, x1, x2))
  with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as in the hash
    return threefry_rounds(k1, k2, x1, x2)


def threefry_rounds(k1, k2, x1, x2) -> tuple:
  """The 20 rounds on uint32 arrays of either numpy or jax.numpy (operators and numpy
  uint32 constants only, so the same code serves the host and a jitted sampler)."""
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = ((x2 << np.uint32(r)) | (x2 >> np.uint32(32 - r))) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def fold_in_data(key_data_x2, data) -> np.ndarray:
  """uint32 [..., 2]: the raw data of jax.random.fold_in(key, d) for each d in `data`
  (threefry keys: the hash of the counter pair (0, d) under the key), on the host."""
  kd = np.asarray(key_data_x2, np.uint32)
  d = np.asarray(data, np.int64) % 2**32
  y1, y2 = threefry2x32(kd[..., 0], kd[..., 1], np.zeros_like(d), d)
  return np.stack([y1, y2], axis=-1).reshape(np.broadcast_shapes(kd.shape[:-1], d.shape) + (2,))


def _host_keys() -> bool:
  """Keys are derived on the host where their bits are known (threefry, the default)."""
  return jax.config.jax_default_prng_impl == "threefry2x32"


def key_data_of_seed(seed) -> np.ndarray | jax.Array:
  """The raw data of jax.random.key(seed) (uint32 [2]) computed on the host where its
  bits are known (threefry, an int32 seed); else the typed key itself."""
  if _host_keys() and int(seed) in _INT32:
    return np.array([0, int(seed) % 2**32], np.uint32)
  return jax.random.key(int(seed))


def key(seed: int, name: str, step: int = 0) -> jax.Array:
  """The typed PRNG key of stream `name` at `step`."""
  if _host_keys() and int(seed) in _INT32:
    return jax.random.wrap_key_data(key_data(seed, name, step))
  base = jax.random.fold_in(jax.random.key(int(seed)), _stream_id(name))
  return jax.random.fold_in(base, int(step))


def key_data(seed: int, name: str, step: int = 0) -> np.ndarray:
  """uint32 [2] raw key data (for host batches that cross into jit as arrays): the bits
  of `key`, computed on the host (checked against jax.random in tests/core/test_rng.py)."""
  if not (_host_keys() and int(seed) in _INT32):
    return np.asarray(jax.random.key_data(key(seed, name, step)))
  base = key_data_of_seed(seed)
  return fold_in_data(fold_in_data(base, _stream_id(name)), int(step))


def int_seed(seed: int, name: str, step: int = 0) -> int:
  """A non-negative int31 seed for APIs that take an int (grain, init, numpy)."""
  return int(key_data(seed, name, step)[-1] & 0x7FFFFFFF)


def numpy_rng(seed: int, name: str, step: int = 0) -> np.random.Generator:
  """A host numpy generator seeded from the stream's key (all 64 key bits)."""
  return np.random.default_rng(key_data(seed, name, step).astype(np.uint64))
