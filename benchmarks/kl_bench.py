"""Loss + gradient of the distillation KL: naive materialised logits vs the fused kernel.

Each (shape, variant) runs in a fresh subprocess so peak RSS and compile caches do not
leak between variants. Per row: median wall time, working memory (XLA
`memory_analysis()` temp bytes of the compiled loss+grad, and process peak RSS minus the
RSS after the inputs exist), ratios to naive, and the achieved FLOP rate as a fraction of
a same-process [N, D] @ [D, V] matmul (4 head-sized matmuls per loss+grad: two forward
logits, d(hidden), d(head)). fp32 on CPU.

  python benchmarks/kl_bench.py --quick                    # one small shape
  python benchmarks/kl_bench.py --shapes 4096x576x151936   # N x D x V rows
  python benchmarks/kl_bench.py                            # the full grid (hours on 2 cores)

The last line printed is one JSON object {"rows": [...]}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

GRID = list(itertools.product((1024, 4096), (576, 1024), (49152, 151936)))
QUICK = [(512, 64, 8192)]
VARIANTS = ("naive", "ours")


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _median_time(fn, args, reps):
  import jax

  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def worker(variant: str, n: int, d: int, v: int, kind: str, chunk: int, reps: int) -> dict:
  """Runs in its own process: compile, time, measure memory, then the matmul yardstick."""
  import jax
  import jax.numpy as jnp

  from dkd_jax.objectives import kl
  from dkd_jax.objectives import naive_kl

  ks = jax.random.split(jax.random.key(0), 4)
  hs = jax.random.normal(ks[0], (n, d), jnp.float32)
  ht = jax.random.normal(ks[1], (n, d), jnp.float32)
  Ws = jax.random.normal(ks[2], (d, v), jnp.float32) / d**0.5
  Wt = jax.random.normal(ks[3], (d, v), jnp.float32) / d**0.5
  mask = jnp.ones((n,), jnp.float32)
  jax.block_until_ready((hs, ht, Ws, Wt))
  base_rss = _rss_bytes()
  spec = kl.KLSpec(kind=kind, chunk=chunk)
  loss_fn = naive_kl.reference_loss if variant == "naive" else kl.distill_loss
  f = lambda hs, Ws, ht, Wt, m: loss_fn(hs, Ws, ht, Wt, m, spec)[0]
  step = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
  compiled = step.lower(hs, Ws, ht, Wt, mask).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  jax.block_until_ready(compiled(hs, Ws, ht, Wt, mask))  # warm-up
  median = _median_time(compiled, (hs, Ws, ht, Wt, mask), reps)
  rss = _peak_rss_bytes() - base_rss  # taken before the matmul yardstick allocates [N, V]
  mm = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(mm(hs, Ws))
  mm_s = _median_time(mm, (hs, Ws), reps)
  rate, mm_rate = 4 * 2 * n * d * v / median, 2 * n * d * v / mm_s
  return dict(
    N=n,
    D=d,
    V=v,
    variant=variant,
    median_s=median,
    working_bytes=temp,
    rss_delta_bytes=rss,
    matmul_s=mm_s,
    matmul_frac=rate / mm_rate,
  )


def _spawn(variant, shape, args) -> dict:
  n, d, v = shape
  cmd = [
    sys.executable,
    __file__,
    "--worker",
    variant,
    "--shapes",
    f"{n}x{d}x{v}",
    "--kind",
    args.kind,
    "--chunk",
    str(args.chunk),
    "--reps",
    str(args.reps),
  ]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode:
    return dict(N=n, D=d, V=v, variant=variant, error=out.stderr.strip()[-400:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def _with_ratios(rows):
  naive = {(r["N"], r["D"], r["V"]): r for r in rows if r["variant"] == "naive"}
  for r in rows:
    base = naive.get((r["N"], r["D"], r["V"]))
    ok = base and "error" not in base and "error" not in r
    r["time_ratio"] = r["median_s"] / base["median_s"] if ok else None
    r["mem_ratio"] = r["working_bytes"] / base["working_bytes"] if ok else None
  return rows


def _table(rows):
  head = (
    f"{'N':>5} {'D':>5} {'V':>7} {'variant':>7} {'median_s':>9} {'temp_MB':>9} "
    f"{'rss_MB':>8} {'t_ratio':>7} {'m_ratio':>7} {'mm_frac':>7}"
  )
  print(head)
  for r in rows:
    if "error" in r:
      print(f"{r['N']:>5} {r['D']:>5} {r['V']:>7} {r['variant']:>7} ERROR {r['error']!r}")
      continue
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    print(
      f"{r['N']:>5} {r['D']:>5} {r['V']:>7} {r['variant']:>7} {r['median_s']:>9.3f} "
      f"{r['working_bytes'] / 2**20:>9.1f} {r['rss_delta_bytes'] / 2**20:>8.1f} "
      f"{fmt(r['time_ratio']):>7} {fmt(r['mem_ratio']):>7} {r['matmul_frac']:>7.3f}"
    )


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="one small shape")
  ap.add_argument("--shapes", default="", help="comma list of NxDxV (default: full grid)")
  ap.add_argument("--kind", default="forward", help="KLSpec.kind for both variants")
  ap.add_argument("--chunk", type=int, default=256)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
  args = ap.parse_args()
  shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s]
  if args.worker:
    print(json.dumps(worker(args.worker, *shapes[0], args.kind, args.chunk, args.reps)))
    return
  shapes = shapes or (QUICK if args.quick else GRID)
  rows = [_spawn(var, shape, args) for shape in shapes for var in VARIANTS]
  rows = _with_ratios(rows)
  _table(rows)
  keys = (
    "N",
    "D",
    "V",
    "variant",
    "median_s",
    "working_bytes",
    "rss_delta_bytes",
    "time_ratio",
    "mem_ratio",
    "matmul_frac",
    "error",
  )
  print(json.dumps({"rows": [{k: r[k] for k in keys if k in r} for r in rows]}))


if __name__ == "__main__":
  main()
