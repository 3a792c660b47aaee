"""Where a study step's time goes: one `:chain` arm run in-process, timed per phase.

  python benchmarks/step_profile.py --arm rev_student --teacher_dir /tmp/ssb_teacher

Runs --steps steps of the arm's loop (`distill_loop.Loop`, the teacher copied from
--teacher_dir or bootstrapped with --teacher_steps) and, over the steps after the first
two, reports per step: the compile seconds (jax's backend-compile event), the engine's
jitted calls (each waited for, so a call's time is its dispatch + its math), the host
transfers of the rollout (`sharding.to_host`), the rest of the rollout (Python: planning,
prefill batches, harvest, packing), the train step (dispatch + math) with its metrics
pull, and the rest of the step. With --cprofile the top functions by own time follow.
Waiting for every call serialises host and device work, so the phases add up to a little
more than an unprofiled step.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import importlib.util
import os
import pstats
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from dkd_jax.core import compiles  # noqa: E402
from dkd_jax.core import sharding  # noqa: E402
from dkd_jax.generate import engine as engine_lib  # noqa: E402
from dkd_jax.generate import rollout as rollout_lib  # noqa: E402
from dkd_jax.runs import distill_loop  # noqa: E402
from dkd_jax.runs import pair as pair_lib  # noqa: E402
from dkd_jax.runs import tasks  # noqa: E402

ARMS = {"rev_student": "rev_student.py", "fwd_teacher": "fwd_teacher.py", "mix": "kl_mix.py"}


def config(arm: str, overrides: dict):  # noqa: ANN201
  path = os.path.join(HERE, "configs", ARMS[arm])
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("chain")
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


class Timers:
  def __init__(self):
    self.total = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self.on = True

  def wrap(self, name, fn, block=True):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
      t0 = time.perf_counter()
      out = fn(*args, **kwargs)
      if block:
        jax.block_until_ready(out)
      self.total[name] += time.perf_counter() - t0
      self.calls[name] += 1
      return out

    return timed


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--arm", default="rev_student", choices=sorted(ARMS))
  ap.add_argument("--steps", type=int, default=12)
  ap.add_argument("--teacher_dir", default=os.path.join(tempfile.gettempdir(), "ssb_teacher"))
  ap.add_argument("--teacher_steps", type=int, default=800)
  ap.add_argument("--cprofile", action="store_true")
  a = ap.parse_args()
  work = tempfile.mkdtemp(prefix="step_profile_")
  if os.path.isdir(a.teacher_dir):
    shutil.copytree(a.teacher_dir, os.path.join(work, "teacher"))
  c = config(a.arm, {"teacher.bootstrap_steps": a.teacher_steps, "train.steps": a.steps})
  mesh = sharding.resolve_mesh(c.mesh)
  tokenizer = pair_lib.load_tokenizer(c, work)
  task = tasks.load_task(c, tokenizer, work)
  pair = pair_lib.load_pair(c, mesh, task, work, print)
  loop = distill_loop.Loop(c, mesh, pair, task, work, print)

  t = Timers()
  E = engine_lib.Engine
  for name in dir(E):
    if name in (
      "init_decode_state",
      "decode_params",
      "prefill_batch",
      "prefill_multisampling",
      "insert",
      "generate_steps",
      "insert_many",
      "rollout_steps",
      "start",
    ):
      setattr(E, name, t.wrap(f"engine.{name}", getattr(E, name)))
  rollout_lib.sharding = type(sys)("sharding_proxy")
  rollout_lib.sharding.__dict__.update(sharding.__dict__)
  rollout_lib.sharding.to_host = t.wrap("rollout: to_host", sharding.to_host, block=False)
  rollout_lib.rollout = t.wrap("rollout (all)", rollout_lib.rollout)
  step_fn = loop.step_fn
  loop.step_fn = t.wrap("train step (dispatch+math)", step_fn)
  log = compiles.CompileLog()
  prof = cProfile.Profile() if a.cprofile else None
  per_step = []
  with log:
    for i in range(a.steps):
      if i == 2:
        for d in (t.total, t.calls):
          d.clear()
        mark, c0 = log.mark(), log.seconds
        if prof:
          prof.enable()
      t0 = time.perf_counter()
      m = loop.step(i)
      per_step.append(time.perf_counter() - t0)
      if i == 0:
        print(f"step 1: {per_step[0]:.2f}s, loss {m['loss']:.6f}, compiles {len(log)}")
  if prof:
    prof.disable()
  n = a.steps - 2
  step = sum(per_step[2:]) / n
  print(f"\n{a.arm} :chain, {n} steps after 2 warm-up steps, load {os.getloadavg()[0]:.1f}")
  print(f"  step (wall, profiled)           {1e3 * step:8.2f} ms")
  print(
    f"  compile                         {1e3 * (log.seconds - c0) / n:8.2f} ms "
    f"({len(log.since(mark))} compiles: {sorted(set(log.since(mark)))})"
  )
  roll = t.total.pop("rollout (all)", 0.0)
  inner = 0.0
  for k in sorted(t.total):
    if k.startswith(("engine.", "rollout:")):
      inner += t.total[k]
      print(f"  {k:30s}  {1e3 * t.total[k] / n:8.2f} ms ({t.calls[k] / n:.1f} calls)")
  print(f"  rollout: the rest (Python)      {1e3 * (roll - inner) / n:8.2f} ms")
  tr = t.total.get("train step (dispatch+math)", 0.0)
  print(f"  train step (dispatch+math)      {1e3 * tr / n:8.2f} ms")
  print(f"  step: the rest (host work)      {1e3 * (step * n - roll - tr) / n:8.2f} ms")
  if prof:
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)
  shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
