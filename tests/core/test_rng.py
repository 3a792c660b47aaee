"""Named random streams: distinct per stream and per step, stable across calls."""

import itertools

import jax
import numpy as np
import pytest

from dkd_jax.core import rng


def test_streams_of_one_step_are_pairwise_distinct_for_seed_0():
  for step in (0, 1, 7):
    keys = {name: tuple(rng.key_data(0, name, step)) for name in rng.STREAMS}
    for a, b in itertools.combinations(keys, 2):
      assert keys[a] != keys[b], (a, b, step)


def test_a_stream_never_repeats_across_steps():
  seen = {tuple(rng.key_data(0, "student_rollout", s)) for s in range(200)}
  assert len(seen) == 200


def test_student_and_teacher_rollouts_of_a_step_differ():
  """The old ad-hoc derivation gave both rollouts of a mixed step the same key at seed 0."""
  for step in range(5):
    assert not np.array_equal(
      rng.key_data(0, "student_rollout", step), rng.key_data(0, "teacher_rollout", step)
    )


def test_key_is_deterministic_and_typed():
  k = rng.key(3, "train_step", 5)
  assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(k), rng.key_data(3, "train_step", 5))
  assert rng.int_seed(3, "train_step", 5) == rng.int_seed(3, "train_step", 5)
  assert 0 <= rng.int_seed(3, "train_step", 5) < 2**31
  a = rng.numpy_rng(3, "prefix_rows", 1).integers(0, 1 << 30, 4)
  b = rng.numpy_rng(3, "prefix_rows", 1).integers(0, 1 << 30, 4)
  np.testing.assert_array_equal(a, b)


def test_stream_ids_are_unique_and_unknown_names_fail():
  assert len(set(rng.STREAMS.values())) == len(rng.STREAMS)
  with pytest.raises(KeyError, match="student_rollout"):
    rng.key(0, "studnet_rollout")


@pytest.mark.parametrize("seed", [0, 1, 3, -3, 2**31 - 1, -(2**31)])
def test_host_keys_are_jax_random_bit_for_bit(seed):
  """Keys derived on the host (numpy Threefry) hold the bits jax.random derives."""
  for name, step in (("student_rollout", 0), ("train_step", 5), ("prefix_rows", 2**31 + 7)):
    want = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), rng.STREAMS[name]), np.uint32(step)
    )
    np.testing.assert_array_equal(rng.key_data(seed, name, step), jax.random.key_data(want))
  base = jax.random.key(seed)
  np.testing.assert_array_equal(rng.key_data_of_seed(seed), jax.random.key_data(base))
  got = rng.fold_in_data(jax.random.key_data(base), np.arange(64, dtype=np.uint32))
  want = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(base, i)))(np.arange(64))
  np.testing.assert_array_equal(got, want)


def test_request_keys_same_from_seed_key_and_key_data():
  """A rollout's request keys: the same from an int seed, a typed key or its raw data,
  and equal to fold_in(base, i) (the device path they replaced)."""
  from dkd_jax.generate import rollout

  k = rng.key(7, "student_rollout", 3)
  want = np.asarray(rollout._fold_keys(k, np.arange(8, dtype=np.uint32)))[:5]
  np.testing.assert_array_equal(rollout.request_keys(k, 5), want)
  np.testing.assert_array_equal(
    rollout.request_keys(rng.key_data(7, "student_rollout", 3), 5), want
  )
  np.testing.assert_array_equal(
    rollout.request_keys(11, 3),
    np.asarray(rollout._fold_keys(jax.random.key(11), np.arange(4)))[:3],
  )
