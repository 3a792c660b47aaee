"""Decode-step time: SmolLM2-135M shapes (random weights), B=16, cache S=160, donated.

  python benchmarks/decode_step_bench.py [OLD_decoder.py]

With a path, the same step through another copy of the decoder module (e.g.
`git archive <rev> | tar -x -C /tmp/base`), interleaved, min of 8 (noisy machines).
"""

import os

sys_path_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import importlib.util
import sys
import time

sys.path.insert(0, sys_path_root)  # this checkout, not an installed copy
import jax
import jax.numpy as jnp

from dkd_jax.models import decoder as new
from dkd_jax.models import kv_cache

mods = {"new": new}
if len(sys.argv) > 1:
  spec = importlib.util.spec_from_file_location("decoder_old", sys.argv[1])
  mods["old"] = sys.modules["decoder_old"] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mods["old"])
cfg = new.ModelConfig(
  vocab_size=49152,
  d_model=576,
  d_ff=1536,
  n_layers=30,
  n_heads=9,
  n_kv_heads=3,
  head_dim=64,
  max_seq_len=2048,
)
gd, params = new.init_params(cfg, None, 0)
B, S = 16, 160


def mk(mod):
  gdm = mod.abstract(cfg)[0]
  step = jax.jit(lambda p, c, t, pos: mod.logits(gdm, p, t, pos, c), donate_argnums=1)
  cache = (mod.init_cache if hasattr(mod, "init_cache") else kv_cache.init_cache)(cfg, B, S)
  tok = jnp.ones((B, 1), jnp.int32)
  state = {"c": cache, "i": 40}

  def run():
    out, state["c"] = step(params, state["c"], tok, jnp.full((B, 1), state["i"], jnp.int32))
    state["i"] += 1
    jax.block_until_ready(out)
    return out

  run()
  return run


fs = {k: mk(m) for k, m in mods.items()}
best = {k: 1e9 for k in fs}
for _ in range(8):
  for k, f in fs.items():
    t0 = time.perf_counter()
    f()
    best[k] = min(best[k], time.perf_counter() - t0)
print({k: round(v * 1e3, 1) for k, v in best.items()}, "ms/step min of 8, interleaved")
