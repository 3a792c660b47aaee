"""Sampler cost per decode step, before/after in one process.

  python benchmarks/sampler_bench.py [--old PATH_TO_OLD_sampling.py]

Times `sampling.sample` (jitted) on [B, V] logits shaped like SmolLM2's (V=49,152) for
temperature-only, top-k, top-p and top-k+top-p samplers; logits are a scaled Gaussian:
at --scale 3 a few hundred tokens hold the top-p 0.9 mass at T=1, at --scale 1.5 some
thousands (SmolLM2 at T=1 on generate_bench's prompt: 97% of decode steps have a row
whose nucleus exceeds 256 tokens). With --old, the same samplers through another copy of
the module (e.g. `git show <rev>:dkd_jax/generate/sampling.py > /tmp/old.py`). Last line
JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

# This checkout's package, not whichever dkd_jax is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.generate import sampling

SAMPLERS = {
  "T=1": dict(temperature=1.0),
  "top_k=50": dict(temperature=1.0, top_k=50),
  "top_p=0.9": dict(temperature=1.0, top_p=0.9),
  "top_k=50,top_p=0.9": dict(temperature=1.0, top_k=50, top_p=0.9),
}


def time_ms(mod, kw, logits_BxV, reps):
  fn = jax.jit(mod.sample, static_argnums=0)
  smp = mod.Sampler(**kw)
  B = logits_BxV.shape[0]
  keys = jnp.broadcast_to(mod.request_key(0), (B, 2))
  jax.block_until_ready(fn(smp, logits_BxV, keys, jnp.zeros((B,), jnp.int32)))
  t0 = time.perf_counter()
  for i in range(reps):
    out = fn(smp, logits_BxV, keys, jnp.full((B,), i, jnp.int32))
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / reps * 1e3


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--vocab", type=int, default=49152)
  ap.add_argument("--scale", type=float, default=3.0, help="logit std")
  ap.add_argument("--reps", type=int, default=10)
  ap.add_argument("--old", default=None, help="path of another sampling.py to compare")
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  logits = jnp.asarray(args.scale * rng.standard_normal((args.batch, args.vocab)), jnp.float32)
  mods = {"new": sampling}
  if args.old:
    spec = importlib.util.spec_from_file_location("sampling_old", args.old)
    mods["old"] = sys.modules["sampling_old"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mods["old"])
  res = {}
  for name, kw in SAMPLERS.items():
    for tag, mod in mods.items():  # interleaved, so load changes hit both alike
      res[f"{tag} {name}"] = round(time_ms(mod, kw, logits, args.reps), 2)
      print(
        f"{tag:4s} {name:20s} {res[f'{tag} {name}']:8.2f} ms/step (B={args.batch}, V={args.vocab})",
        flush=True,
      )
  print(json.dumps(res))


if __name__ == "__main__":
  main()
