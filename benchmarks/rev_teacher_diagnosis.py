"""Why reverse KL on teacher prefixes stalls from a random student (issue 20).

Three parts, each printing what BUILD_NOTES ("rev_teacher from a random student") quotes:

  grad   the kernel's push on the teacher's token, -dL/dz_v*, as a function of the
         student's probability q(v*) of it (forward vs reverse KL; one token, V=32).
  mask   one training batch of configs/rev_teacher.py as the loop builds it: each row's
         tokens, loss mask and targets (prompt / response / EOS / padding).
  train  arms trained at the embedded default's settings (same teacher, data, LR, steps),
         probed every --every steps on the 64 held-out problems: on their gold prefixes
         the student's q(EOS) at the EOS position, q of the teacher's argmax token, the
         share of positions where q(v*) < 0.01 and the reverse-KL push there; on its own
         rollouts (T=0.7) truncation, length and accuracy.

Usage (the teacher is bootstrapped into --teacher_dir by the first run of README
command 1, or copied from any run directory of the default preset):

  python benchmarks/rev_teacher_diagnosis.py grad
  python benchmarks/rev_teacher_diagnosis.py mask --teacher_dir=runs/rev_teacher
  python benchmarks/rev_teacher_diagnosis.py train --teacher_dir=runs/rev_teacher \
      --arms=reverse,forward --out=/tmp/diag.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import rev_teacher  # noqa: E402
from dkd_jax.core import rng  # noqa: E402
from dkd_jax.core import sharding  # noqa: E402
from dkd_jax.data import packing  # noqa: E402
from dkd_jax.data import pipeline  # noqa: E402
from dkd_jax.evals import harness  # noqa: E402
from dkd_jax.models import decoder as model_lib  # noqa: E402
from dkd_jax.objectives import kl as kl_lib  # noqa: E402
from dkd_jax.runs import distill_loop  # noqa: E402
from dkd_jax.runs import pair as pair_lib  # noqa: E402
from dkd_jax.runs import tasks  # noqa: E402

# -- grad ---------------------------------------------------------------------------------


def push_on_teacher_token(q_star: float, kind: str, V: int = 32, p_star: float = 0.99):
  """-dL/dz_v* from the kernel for one token whose student puts q_star on the teacher's
  token v*=0 and the rest on one wrong token w=1 (1e-6 on each other token); the teacher
  puts p_star on v*, the rest spread evenly."""
  eps = 1e-6
  q = np.full(V, eps)
  q[0], q[1] = q_star, 1.0 - q_star - eps * (V - 2)
  p = np.full(V, (1.0 - p_star) / (V - 1))
  p[0] = p_star
  z = jnp.asarray(np.log(q)[None], jnp.float32)
  t = jnp.asarray(np.log(p)[None], jnp.float32)
  eye = jnp.eye(V, dtype=jnp.float32)
  spec = kl_lib.KLSpec(kind=kind)
  grad = jax.grad(lambda z_: kl_lib.distill_loss(z_, eye, t, eye, jnp.ones(1), spec)[0])(z)
  return float(-grad[0, 0])


def cmd_grad(_):
  print("q(v*)     forward -dL/dz_v*   reverse -dL/dz_v*   (teacher p(v*)=0.99, V=32)")
  for q_star in (0.5, 0.1, 1e-2, 1e-3, 1e-4, 1e-5):
    f, r = push_on_teacher_token(q_star, "forward"), push_on_teacher_token(q_star, "reverse")
    print(f"{q_star:<9.0e} {f:>18.4g} {r:>19.4g}")


# -- shared setup -------------------------------------------------------------------------


ARM_FIELDS = {"lr": "optim.lr", "ws": "student.warm_start.steps", "steps": "train.steps"}


def _config(arm: str, seed: int, steps: int):
  """An arm: 'reverse' | 'forward' | 'warm' (reverse KL from the warm start), then
  '+key=value' overrides (keys: ARM_FIELDS), e.g. 'warm+ws=400', 'reverse+lr=5e-4'."""
  base, *over = arm.split("+")
  c = rev_teacher.get_config("")
  c.seed = seed
  c.train.steps = steps
  c.train.ckpt_every = 10**9
  if base == "forward":
    c.objective.kl = "forward"
  # 'warm' arms start from the config's warm start, every other arm from a random init
  c.student.init = "warm_start" if base == "warm" else "random"
  if base == "reverse_lr5e-4":  # the name the first runs used
    c.optim.lr = 5e-4
  for kv in over:
    key, value = kv.split("=")
    c.update_from_flattened_dict({ARM_FIELDS[key]: type(c[ARM_FIELDS[key]])(float(value))})
  return c


def _setup(c, teacher_dir: str):
  """A scratch workdir holding a copy of the bootstrapped teacher; (mesh, task, pair,
  loop, workdir)."""
  workdir = tempfile.mkdtemp(prefix="rt_diag_")
  shutil.copytree(os.path.join(teacher_dir, "teacher"), os.path.join(workdir, "teacher"))
  log = lambda s: print(f"  [{time.strftime('%H:%M:%S')}] {s}", flush=True)
  mesh = sharding.resolve_mesh(c.mesh)
  tokenizer = pair_lib.load_tokenizer(c, workdir)
  task = tasks.load_task(c, tokenizer, workdir)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log)
  loop = distill_loop.Loop(c, mesh, pair, task, workdir, log)
  return mesh, task, pair, loop, workdir


# -- mask ---------------------------------------------------------------------------------


def cmd_mask(a):
  c = _config("reverse", a.seed, 10)
  _, task, _, loop, workdir = _setup(c, a.teacher_dir)
  tok = task.tokenizer
  batch, _ = loop.make_batch(0, next(iter(task.train_batches)), c.data.max_response_len)
  toks, mask = batch["tokens"], batch["loss_mask"]
  show = lambda i: {0: "_", 1: "^", 2: "$"}.get(int(i)) or tok._tokens[int(i)].replace("\n", "/")
  print("legend: ^ BOS, $ EOS, _ pad, / newline; 'mask' row: 1 where position t is trained")
  print("to predict token t+1 (the 'target' row shows that token)")
  for b in range(a.rows):
    m = mask[b].astype(int)
    print(f"row {b}: prompt_len={int(np.argmax(m > 0)) + 1} loss positions={int(m.sum())}")
    print("  token  " + "".join(show(i) for i in toks[b]))
    print("  mask   " + "".join(str(x) for x in m))
    tgt = np.roll(toks[b], -1)
    print("  target " + "".join(show(i) if x else " " for i, x in zip(tgt, m)))
  targets = np.roll(toks, -1, axis=1)
  on = mask > 0
  eos_at = lambda b: np.flatnonzero((targets[b] == tok.eos_id) & on[b])[0]
  after = sum(int(on[b, eos_at(b) + 1 :].sum()) for b in range(len(toks)))
  print(
    f"batch: {int(on.sum())} loss positions; EOS targets "
    f"{int(((targets == tok.eos_id) & on).sum())} (rows {len(toks)}); pad targets "
    f"{int(((targets == tok.pad_id) & on).sum())}; positions after a row's EOS target "
    f"trained: {after}"
  )
  shutil.rmtree(workdir)


# -- train --------------------------------------------------------------------------------


class Probe:
  """Held-out gold prefixes and prompts, fixed for the whole run."""

  def __init__(self, c, task, pair, mesh, loop):
    self.c, self.task, self.pair, self.mesh, self.loop = c, task, pair, mesh, loop
    recs = task.eval_records[: c.eval.num_problems]
    enc = pipeline.encode_records(
      recs,
      task.tokenizer,
      max_prompt_len=c.data.max_prompt_len,
      truncate=True,
      with_responses=True,
      max_response_len=c.data.max_response_len,
    )
    P, R = c.data.max_prompt_len, c.data.max_response_len
    pt = np.stack([np.pad(x, (0, P - len(x))) for x in enc.prompt_ids])
    rt = np.stack([np.pad(x, (0, R - len(x))) for x in enc.response_ids])
    self.tokens, self.mask = packing.pack(
      pt, [len(x) for x in enc.prompt_ids], rt, [len(x) for x in enc.response_ids], 0
    )
    self.records = recs
    s_g, t_g = pair.student_graphdef, pair.teacher_graphdef
    self.fn = jax.jit(
      lambda sp, tp, x: (model_lib.logits(s_g, sp, x)[0], model_lib.logits(t_g, tp, x)[0])
    )

  def __call__(self, params, k: int = 1) -> dict:
    zs, zt = self.fn(params, self.pair.teacher_params, self.tokens)
    lq, lp = jax.nn.log_softmax(zs), jax.nn.log_softmax(zt)
    lq, lp = np.asarray(lq, np.float64), np.asarray(lp, np.float64)
    q = np.exp(lq)
    on = self.mask > 0
    tgt = np.roll(self.tokens, -1, axis=1)
    eos = self.task.tokenizer.eos_id
    at_eos = on & (tgt == eos)
    vstar = np.argmax(lp, -1)
    q_star = np.take_along_axis(q, vstar[..., None], -1)[..., 0]
    rkl = np.sum(q * (lq - lp), -1)
    d = lq - lp - rkl[..., None]
    push_rev = -np.take_along_axis(q * d, vstar[..., None], -1)[..., 0]  # -dRKL/dz_v*
    push_fwd = np.exp(np.take_along_axis(lp, vstar[..., None], -1)[..., 0]) - q_star
    starved = on & (q_star < 0.01)
    out = dict(
      q_eos_at_eos=float(q[..., eos][at_eos].mean()),
      p_eos_at_eos=float(np.exp(lp[..., eos][at_eos]).mean()),
      q_eos_elsewhere=float(q[..., eos][on & ~at_eos].mean()),
      q_vstar=float(q_star[on].mean()),
      starved_frac=float(starved.mean() / on.mean()),
      push_rev_starved=float(push_rev[starved].mean()) if starved.any() else 0.0,
      push_fwd_starved=float(push_fwd[starved].mean()) if starved.any() else 0.0,
      rkl=float(rkl[on].mean()),
      ent_s=float(-(q * lq).sum(-1)[on].mean()),
    )
    # Which targets stay starved: the mean q(v*) per teacher token, worst three.
    name = lambda i: (
      {0: "<pad>", 1: "<bos>", 2: "<eos>"}.get(int(i)) or repr(self.task.tokenizer._tokens[int(i)])
    )
    per = {int(v): float(q_star[on & (vstar == v)].mean()) for v in np.unique(vstar[on])}
    out["worst_targets"] = ", ".join(
      f"{name(v)}:{per[v]:.3f}" for v in sorted(per, key=per.get)[:3]
    )
    m, _ = harness.evaluate_set(
      self.loop.student_engine,
      params,
      self.task.tokenizer,
      self.records,
      self.task.grade,
      k=k,
      temperature=self.c.eval.temperature,
      max_new=self.c.eval.max_response_len,
      max_prompt_len=self.c.data.max_prompt_len,
      seed=rng.key(self.c.seed, "eval_rollout"),
      pad_id=self.task.tokenizer.pad_id,
    )
    out.update(
      own_trunc=m["truncation_rate"], own_len=m["mean_response_len"], own_acc=m["avg_at_k"]
    )
    return out


def cmd_train(a):
  results = {}
  if a.out and os.path.exists(a.out):
    results = json.load(open(a.out))
  for arm in a.arms.split(","):
    c = _config(arm, a.seed, a.steps)
    t0 = time.time()
    mesh, task, pair, loop, workdir = _setup(c, a.teacher_dir)
    probe = Probe(c, task, pair, mesh, loop)
    rows = []
    steps = c.train.steps
    for step in range(steps + 1):
      if step % a.every == 0 or step == steps:
        r = dict(step=step, **probe(loop.state["params"], a.k))
        rows.append(r)
        print(
          f"{arm} step {step}: "
          + " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}=[{v}]"
            for k, v in r.items()
            if k != "step"
          ),
          flush=True,
        )
      if step < steps:
        loop.step(step)
    results[arm] = dict(rows=rows, seconds=time.time() - t0)
    shutil.rmtree(workdir)
    if a.out:
      with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("part", choices=("grad", "mask", "train"))
  p.add_argument("--teacher_dir", default="runs/rev_teacher")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--rows", type=int, default=3)
  p.add_argument("--arms", default="reverse,forward")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--every", type=int, default=100)
  p.add_argument("--out", default="")
  p.add_argument("--k", type=int, default=1, help="samples per problem in the probes")
  a = p.parse_args()
  {"grad": cmd_grad, "mask": cmd_mask, "train": cmd_train}[a.part](a)


if __name__ == "__main__":
  main()
