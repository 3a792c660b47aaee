"""The engine's decode loop (`decode_state.generate_steps_fn`: --steps tokens for B slots
in one jitted call, state donated) in ms per step, SmolLM2-135M shapes, random weights,
greedy and top-p 0.9: this checkout against another one.

  git archive <rev> | tar -x -C /tmp/base
  python benchmarks/decode_loop_bench.py --other /tmp/base

Each checkout is measured in its own child process (both packages are called dkd_jax),
alternating, --rounds times; each child reports the best of 5 calls and the parent the
best child. With `DecodeParams` in the measured checkout the weights are split per layer
once, outside the timed calls (what a rollout does); an older checkout splits them inside
each call, as its rollouts did. The first 6 greedy tokens of slot 0 are printed for both
(same weights, same start: they must agree). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(repo: str, batch: int, steps: int, cache: int) -> dict:
  sys.path.insert(0, repo)
  import jax
  import jax.numpy as jnp

  from dkd_jax.generate import decode_state as ds
  from dkd_jax.generate import sampling
  from dkd_jax.models import decoder as model_lib

  cfg = model_lib.ModelConfig(
    vocab_size=49152,
    d_model=576,
    d_ff=1536,
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    head_dim=64,
    max_seq_len=2048,
  )
  gd, params = model_lib.init_params(cfg, None, 0)
  if hasattr(ds, "decode_params_fn"):
    params = jax.jit(functools.partial(ds.decode_params_fn, cfg, gd))(params)
  out = {}
  for name, sampler in (
    ("greedy", sampling.Sampler(0.0)),
    ("top_p", sampling.Sampler(1.0, top_p=0.9)),
  ):
    fn = jax.jit(
      functools.partial(ds.generate_steps_fn, cfg, gd, sampler, (), steps), donate_argnums=1
    )
    fresh = lambda s: s.replace(
      pos_B=jnp.full((batch,), 32, jnp.int32),
      num_B=jnp.zeros((batch,), jnp.int32),
      done_B=jnp.zeros((batch,), bool),
      limit_B=jnp.full((batch,), cache, jnp.int32),
    )
    state = jax.block_until_ready(fn(params, fresh(ds.init_state_fn(cfg, batch, cache, cache))))
    best = float("inf")
    for _ in range(5):
      start = fresh(state)
      t0 = time.perf_counter()
      state = jax.block_until_ready(fn(params, start))
      best = min(best, (time.perf_counter() - t0) / steps)
    out[name] = best * 1e3
    if name == "greedy":
      out["tokens"] = [int(t) for t in state.out["token"][0, :6]]
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--other", required=False, help="another checkout's root (the 'before')")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--steps", type=int, default=16)
  ap.add_argument("--cache", type=int, default=160)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.child:
    print(json.dumps(child(a.child, a.batch, a.steps, a.cache)))
    return
  repos = {"this": HERE, **({"other": os.path.abspath(a.other)} if a.other else {})}
  best: dict[str, dict] = {}
  for _ in range(a.rounds):
    for tag, repo in repos.items():
      cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        repo,
        "--batch",
        str(a.batch),
        "--steps",
        str(a.steps),
        "--cache",
        str(a.cache),
      ]
      res = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
      )
      print(
        tag,
        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()},
        "ms/step",
        flush=True,
      )
      for k in ("greedy", "top_p"):
        best.setdefault(tag, {})[k] = min(best.get(tag, {}).get(k, float("inf")), res[k])
      best[tag]["tokens"] = res["tokens"]
  out = {
    tag: {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()}
    for tag, r in best.items()
  }
  if "other" in best:
    out["speedup"] = {k: round(best["other"][k] / best["this"][k], 2) for k in ("greedy", "top_p")}
  out.update(batch=a.batch, steps=a.steps, cache=a.cache, load=round(os.getloadavg()[0], 1))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
