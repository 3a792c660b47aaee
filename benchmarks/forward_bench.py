"""Decoder layers forward (no cache), B=16, d=64, 2 layers, per T: this checkout vs another.

  python benchmarks/forward_bench.py OLD_decoder.py 128 160 192 256

Interleaved, min of 7 (noisy machines); prints ms per T for both.
"""

import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp

from dkd_jax.models import decoder as new
from dkd_jax.models import rope

spec = importlib.util.spec_from_file_location("decoder_old", sys.argv[1])
old = sys.modules["decoder_old"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
cfg = new.ModelConfig(
  vocab_size=256,
  d_model=64,
  d_ff=128,
  n_layers=2,
  n_heads=4,
  n_kv_heads=2,
  head_dim=16,
  max_seq_len=512,
)
gd, params = new.init_params(cfg, None, 0)


def fn(mod, T):
  pos = jnp.broadcast_to(jnp.arange(T), (16, T))
  f = jax.jit(
    lambda p, x: mod.apply_layers(
      cfg, p, x, getattr(mod, "rope_tables", rope.tables)(cfg, pos), pos, None
    )[0]
  )
  x = jnp.ones((16, T, 64), jnp.float32)
  jax.block_until_ready(f(params["layers"], x))
  return lambda: jax.block_until_ready(f(params["layers"], x))


for T in [int(a) for a in sys.argv[2:]]:
  fs = {"old": fn(old, T), "new": fn(new, T)}
  best = {k: 1e9 for k in fs}
  for _ in range(7):
    for k, f in fs.items():
      t0 = time.perf_counter()
      f()
      best[k] = min(best[k], time.perf_counter() - t0)
  print(T, {k: round(v * 1e3, 1) for k, v in best.items()}, flush=True)
