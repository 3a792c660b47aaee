"""The KV cache's layout contract: shapes per name, per-layer buffers equal to the stacked
cache's slices, shardings for a decode batch and for a one-prompt prefix."""

import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core import sharding
from dkd_jax.models import decoder as M
from dkd_jax.models import kv_cache

CFG = M.ModelConfig(n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_model=32)


def test_shapes_and_per_layer_form():
  stacked = kv_cache.init_cache(CFG, 4, 10)
  per_layer = kv_cache.init_layer_caches(CFG, 4, 10)
  assert stacked["k"].shape == (3, 4, 2, 8, 10) and stacked["v"].shape == (3, 4, 2, 10, 8)
  for n in ("k", "v"):
    assert len(per_layer[n]) == 3
    assert all(c.shape == stacked[n].shape[1:] for c in per_layer[n])
  assert kv_cache.cache_length(stacked) == 10
  assert kv_cache.cache_length({"v": per_layer["v"][0]}) == 10


def test_write_puts_each_row_at_its_own_start():
  keys, values = (
    c[0] for c in (kv_cache.init_cache(CFG, 2, 6)["k"], kv_cache.init_cache(CFG, 2, 6)["v"])
  )
  k_new = jnp.arange(2 * 2 * 2 * 8, dtype=jnp.float32).reshape(2, 2, 2, 8)  # [B, T, K, Dh]
  keys, values = kv_cache.write((keys, values), k_new, -k_new, jnp.array([0, 3]))
  for b, start in enumerate((0, 3)):
    for t in range(2):
      np.testing.assert_array_equal(keys[b, :, :, start + t], k_new[b, t])
      np.testing.assert_array_equal(values[b, :, start + t], -k_new[b, t])
  assert (
    float(jnp.abs(keys[0, :, :, 2:]).sum()) == 0 and float(jnp.abs(keys[1, :, :, :3]).sum()) == 0
  )


@pytest.mark.parametrize("per_layer", [False, True])
def test_shardings_batch_over_data_and_kv_heads_over_tensor(per_layer):
  mesh = sharding.make_mesh((2, 1, 2))
  out = kv_cache.cache_shardings(mesh, CFG, 4, 10, per_layer=per_layer)
  k, v = (out[n][0] if per_layer else out[n] for n in ("k", "v"))
  lead = () if per_layer else (None,)
  assert tuple(k.spec) == lead + (("data", "fsdp"), "tensor", None, None)
  assert tuple(v.spec) == lead + (("data", "fsdp"), "tensor", None, None)
  prefix = kv_cache.cache_shardings(mesh, CFG, 1, 10, shard_batch=False)
  assert tuple(prefix["k"].spec) == (None, None, "tensor", None, None)
