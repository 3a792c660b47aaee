"""Seconds per step of the study's runs (`:chain` preset): this checkout against another.

  mkdir /tmp/base && git -C . archive a8ae497 | tar -x -C /tmp/base
  python benchmarks/study_step_bench.py --other /tmp/base

Arms: rev_student (student prefixes, reverse KL), fwd_teacher (teacher prefixes: teacher
rollouts, cached per record, so every step of a short run rolls the teacher out) and mix
(configs/kl_mix.py: student prefixes, α cosine 0.8 -> 0.2). Each run is the command line
(`python -m dkd_jax.launch --config=configs/X.py:chain`) in a child process whose cwd and
PYTHONPATH are its checkout, so any two versions of the package compare, whatever their
module layout; the two checkouts alternate (this one first in even rounds), --rounds times.
A run's figures come from its metrics.jsonl: the median over the steps after the first
--warmup (which compile) of step_time, gen_time (the rollouts and batch assembly) and
train_time (the jitted step and its metrics); the best round counts. Both checkouts read
one bootstrapped teacher (made once by this checkout, cached in --teacher_dir), run the
same seed and the same batches: their first-step losses must agree to 1e-5 relative.
The machine's load average is printed beside every figure. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {"rev_student": "rev_student.py", "fwd_teacher": "fwd_teacher.py", "mix": "kl_mix.py"}
# Evaluation runs after the timed steps; keep it short (it is not measured).
EVAL = [
  "--config.eval.num_problems=2",
  "--config.eval.kl_problems=2",
  "--config.eval.k=2",
  "--config.eval.teacher=False",
  "--config.train.ckpt_every=100000",
]


def load() -> str:
  a, b = os.getloadavg()[:2]
  return f"load {a:.1f}/{b:.1f}"


def launch(repo: str, config: str, workdir: str, extra: list[str], log_path: str) -> float:
  """Runs one launch command in `repo`; returns its wall seconds."""
  cmd = [sys.executable, "-m", "dkd_jax.launch", f"--config={config}", f"--workdir={workdir}"]
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    done = subprocess.run(cmd + extra, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
  if done.returncode:
    tail = open(log_path).read()[-3000:]
    raise RuntimeError(f"{' '.join(cmd + extra)} (cwd {repo}) failed:\n{tail}")
  return time.perf_counter() - t0


def ensure_teacher(teacher_dir: str, steps: int, scratch: str) -> str:
  """The :chain teacher, bootstrapped once by this checkout into `teacher_dir`."""
  if os.path.isfile(os.path.join(teacher_dir, "teacher_meta.json")):
    return teacher_dir
  work = os.path.join(scratch, "bootstrap")
  print(f"bootstrapping the :chain teacher ({steps} steps) into {teacher_dir} ...", flush=True)
  launch(
    HERE,
    "configs/rev_student.py:chain",
    work,
    ["--config.train.steps=1", f"--config.teacher.bootstrap_steps={steps}"] + EVAL,
    os.path.join(scratch, "bootstrap.log"),
  )
  shutil.copytree(os.path.join(work, "teacher"), teacher_dir, dirs_exist_ok=True)
  return teacher_dir


def measure(repo, arm, steps, warmup, teacher_dir, teacher_steps, scratch, tag) -> dict:
  work = os.path.join(scratch, tag)
  shutil.rmtree(work, ignore_errors=True)
  shutil.copytree(teacher_dir, os.path.join(work, "teacher"))
  extra = [f"--config.train.steps={steps}", f"--config.teacher.bootstrap_steps={teacher_steps}"]
  wall = launch(repo, f"configs/{ARMS[arm]}:chain", work, extra + EVAL, work + ".log")
  with open(os.path.join(work, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  timed = rows[warmup:]
  med = lambda k: statistics.median(r[k] for r in timed)
  out = {
    "step": med("step_time"),
    "rollout": med("gen_time"),
    "train": med("train_time"),
    "first_loss": rows[0]["loss"],
    "first_step": rows[0]["step_time"],
    "wall": wall,
    "load": os.getloadavg()[0],
  }
  shutil.rmtree(work, ignore_errors=True)
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--other", required=True, help="the other checkout (e.g. /tmp/base)")
  ap.add_argument("--arms", default=",".join(ARMS))
  ap.add_argument("--steps", type=int, default=14)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--teacher_dir", default=os.path.join(tempfile.gettempdir(), "ssb_teacher"))
  ap.add_argument("--teacher_steps", type=int, default=800)
  a = ap.parse_args()
  if a.rounds < 2 or a.steps <= a.warmup:
    raise SystemExit("--rounds >= 2 and --steps > --warmup")
  scratch = tempfile.mkdtemp(prefix="study_step_bench_")
  teacher = ensure_teacher(a.teacher_dir, a.teacher_steps, scratch)
  sides = {"this": HERE, "other": os.path.abspath(a.other)}
  arms = [x for x in a.arms.split(",") if x]
  best: dict = {arm: {} for arm in arms}
  for r in range(a.rounds):
    for arm in arms:
      for side in ("this", "other") if r % 2 == 0 else ("other", "this"):
        m = measure(
          sides[side], arm, a.steps, a.warmup, teacher, a.teacher_steps, scratch, f"{arm}_{side}"
        )
        print(
          f"round {r} {arm:11s} {side:5s}: {m['step']:.4f} s/step (rollout {m['rollout']:.4f} "
          f"train {m['train']:.4f}) first loss {m['first_loss']:.6f} wall {m['wall']:.0f}s "
          f"[load {m['load']:.1f}]",
          flush=True,
        )
        prev = best[arm].get(side)
        if prev is None:
          best[arm][side] = m
        else:  # best of the rounds, per figure
          for k in ("step", "rollout", "train", "wall"):
            prev[k] = min(prev[k], m[k])
          if m["first_loss"] != prev["first_loss"]:
            raise SystemExit(f"{arm} {side}: the first loss changed between rounds")
  result = {"other": sides["other"], "steps": a.steps, "warmup": a.warmup, "arms": {}}
  print(
    f"\nbest of {a.rounds} rounds, median s/step over steps {a.warmup + 1}..{a.steps} ({load()})"
  )
  ok = True
  for arm in arms:
    t, o = best[arm]["this"], best[arm]["other"]
    rel = abs(t["first_loss"] - o["first_loss"]) / max(abs(o["first_loss"]), 1e-12)
    ok &= rel <= 1e-5
    ratio = {k: o[k] / t[k] for k in ("step", "rollout", "train")}
    print(
      f"{arm:11s} this {t['step']:.4f} (rollout {t['rollout']:.4f}, train {t['train']:.4f}) | "
      f"other {o['step']:.4f} (rollout {o['rollout']:.4f}, train {o['train']:.4f}) | "
      f"x{ratio['step']:.2f} step, x{ratio['rollout']:.2f} rollout, x{ratio['train']:.2f} train"
      f" | first loss {t['first_loss']:.6f} vs {o['first_loss']:.6f} (rel {rel:.1e})"
    )
    result["arms"][arm] = {"this": t, "other": o, "ratio": ratio, "first_loss_rel": rel}
  result["first_losses_agree"] = bool(ok)
  result["load"] = os.getloadavg()
  print(json.dumps(result))
  shutil.rmtree(scratch, ignore_errors=True)
  if not ok:
    raise SystemExit("first-step losses differ by more than 1e-5 relative")


if __name__ == "__main__":
  main()
