"""The engine's decode loop (`generate_steps_fn`, N tokens in one jit, state donated):
this checkout vs another copy of `decode_state.py`, SmolLM2-135M shapes, random weights.

  git show <rev>:dkd_jax/generate/decode_state.py > /tmp/decode_state_old.py
  python benchmarks/decode_loop_bench.py /tmp/decode_state_old.py [--steps=16 --batch=16]

Interleaved, min of 5 calls each (noisy machines); prints ms per token for both and the
ratio as the last JSON line. Greedy and sampled (T=1, top-p 0.9) rows.
"""
import argparse
import functools
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dkd_jax.generate import decode_state as new  # noqa: E402
from dkd_jax.generate import sampling  # noqa: E402
from dkd_jax.models import decoder as model_lib  # noqa: E402


def load(path):
  spec = importlib.util.spec_from_file_location("decode_state_old", path)
  mod = sys.modules["decode_state_old"] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("old")
  ap.add_argument("--steps", type=int, default=16)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--cache", type=int, default=160)
  ap.add_argument("--layers", type=int, default=30)
  a = ap.parse_args()
  cfg = model_lib.ModelConfig(vocab_size=49152, d_model=576, d_ff=1536, n_layers=a.layers,
                              n_heads=9, n_kv_heads=3, head_dim=64, max_seq_len=2048)
  gd, params = model_lib.init_params(cfg, None, 0)
  mods = {"old": load(a.old), "new": new}
  out = {}
  for name, sampler in (("greedy", sampling.Sampler(0.0)),
                        ("top_p", sampling.Sampler(1.0, top_p=0.9))):
    fns, states = {}, {}
    for k, m in mods.items():
      f = jax.jit(functools.partial(m.generate_steps_fn, cfg, gd, sampler, (), a.steps),
                  donate_argnums=1)
      st = m.init_state_fn(cfg, a.batch, a.cache, a.cache)
      st = st.replace(done_B=jnp.zeros((a.batch,), bool),
                      limit_B=jnp.full((a.batch,), a.cache, jnp.int32),
                      pos_B=jnp.full((a.batch,), 32, jnp.int32))
      fns[k], states[k] = f, jax.block_until_ready(f(params, st))
    best = {k: 1e9 for k in mods}
    for _ in range(5):
      for k in mods:
        st = states[k].replace(pos_B=jnp.full((a.batch,), 32, jnp.int32),
                               num_B=jnp.zeros((a.batch,), jnp.int32))
        t0 = time.perf_counter()
        states[k] = jax.block_until_ready(fns[k](params, st))
        best[k] = min(best[k], (time.perf_counter() - t0) / a.steps)
    out[name] = {k: round(v * 1e3, 1) for k, v in best.items()}
    out[name]["speedup"] = round(best["old"] / best["new"], 2)
    print(name, out[name], "ms/token", flush=True)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
