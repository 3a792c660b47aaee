"""The distillation train step with the head and KL over every position vs over each
row's response window only (`StepStatic.response_window`), same batch, same process.

  python benchmarks/train_step_bench.py            # SmolLM2-135M shapes: teacher 30 layers,
                                                   # student 8, B=4, P=128, R=64, fp32
  python benchmarks/train_step_bench.py --quick    # tiny shapes (a smoke run)

Random weights (speed does not depend on them); interleaved, min of --reps; the last line
is one JSON object with both step times and the ratio.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import numpy as np

from dkd_jax.core import rng as rng_lib
from dkd_jax.data import packing
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.train import step as train


def configs(quick: bool):
  if quick:
    t = model_lib.ModelConfig(
      vocab_size=512,
      d_model=64,
      d_ff=128,
      n_layers=4,
      n_heads=4,
      n_kv_heads=2,
      head_dim=16,
      max_seq_len=256,
    )
    return t, dataclasses.replace(t, n_layers=2)
  t = model_lib.ModelConfig(
    vocab_size=49152,
    d_model=576,
    d_ff=1536,
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    head_dim=64,
    max_seq_len=2048,
  )
  return t, dataclasses.replace(t, n_layers=8)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--prompt", type=int, default=128)
  ap.add_argument("--response", type=int, default=64)
  ap.add_argument("--reps", type=int, default=3)
  a = ap.parse_args()
  t_cfg, s_cfg = configs(a.quick)
  t_gd, t_params = model_lib.init_params(t_cfg, None, 1)
  s_gd, s_params = model_lib.init_params(s_cfg, None, 0)
  rng = np.random.default_rng(0)
  B, P, R = a.batch, a.prompt, a.response
  tokens, mask = packing.pack(
    rng.integers(3, t_cfg.vocab_size, (B, P)),
    rng.integers(P // 2, P + 1, B),
    rng.integers(3, t_cfg.vocab_size, (B, R)),
    np.full(B, R),
    0,
  )
  batch = train.make_batch(tokens, mask, np.ones(B, bool), 0.0, rng_lib.key_data(0, "train_step"))
  opt = train.make_optimizer(
    type(
      "O",
      (),
      dict(
        lr=1e-3, warmup_steps=1, end_lr_frac=1.0, clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.0
      ),
    )(),
    10,
  )
  spec = kl_lib.KLSpec(kind="reverse")
  fns = {}
  for name, W in (("all_positions", 0), ("response_window", R)):
    static = train.StepStatic(s_gd, t_gd, spec, opt, None, response_window=W)
    step = jax.jit(lambda st, b, tp, static=static: train.train_step(static, st, b, tp))
    state = train.init_state(opt, s_params)
    jax.block_until_ready(step(state, batch, t_params))  # compile
    fns[name] = (step, state)
  best = {k: 1e9 for k in fns}
  for _ in range(a.reps):
    for k, (step, state) in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(step(state, batch, t_params))
      best[k] = min(best[k], time.perf_counter() - t0)
  out = {k: round(v, 3) for k, v in best.items()}
  out["speedup"] = round(best["all_positions"] / best["response_window"], 2)
  out.update(batch=B, prompt=P, response=R, quick=a.quick)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
