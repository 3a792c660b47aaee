"""A BPE student vs the same student with the teacher's tokenizer, on-policy on chain.

Issue 24's comparison: the same student architecture distilled on student prefixes
(reverse KL, sampled-token estimator) from one character-level teacher, once with its own
BPE vocabulary (`configs/xtok.py`, the chunk-level estimator) and once with the teacher's
character tokenizer (`configs/rev_student.py:chain`, the fused kernel); same steps, same
seeds, same held-out problems. Prints one row per (arm, seed) and the seed-mean Avg@k ratio
bpe / char (the issue asks for >= 0.9 on >= 3 seeds from a competent teacher, Avg@8 >= 0.5).

  python benchmarks/xtok_bench.py --out=/tmp/xtok_bench --seeds=0,1,2 --steps=600 \\
    --teacher=RUN_DIR/teacher

Both arms start from a warm start (`--init=warm_start`: SFT on gold traces of a disjoint
split, each in the student's own tokens; `--init=random` to skip it). `--teacher` is a
bootstrapped teacher directory (WORKDIR/teacher of any chain run with the
same teacher settings) copied into every run, so all arms distil the same teacher; without
it each run bootstraps its own. `--preset=tiny` and `--extra=--config.a.b=v,...` pass through
to both arms (e.g. a warm start once the student has one). `--char_from=STUDY_OUT` reads the
char arm from a study's finished `rev_student_s<seed>` runs instead of running it (the full-
vocabulary estimator, the stronger baseline); `--extra` must then repeat that study's flags,
and the printed config differences show whether it did. `--warm_from=STUDY_OUT` copies a
study's `warm_start_s<seed>/student_warm_start` into each char run (the run reuses it when
its cache key matches: same model, schedule, seed and data). Smoke test (minutes on CPU):

  python benchmarks/xtok_bench.py --out=/tmp/xtok_bench_smoke --seeds=0 --steps=4 --preset=tiny \\
    --extra=--config.teacher.bootstrap_steps=30,--config.eval.num_problems=4,--config.eval.k=2
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dkd_jax.runs.workdir import WARM_START as WARM  # noqa: E402

ARMS = {
  # the student's own BPE vocabulary, the chunk-level estimator
  "bpe": ("configs/xtok.py", []),
  # the teacher's character tokenizer: today's sampled-token path
  "char": ("configs/rev_student.py", ["--config.objective.estimator=sampled_token"]),
}


def run_arm(arm, seed, args) -> dict:
  cfg, arm_flags = ARMS[arm]
  work = os.path.join(args.out, f"{arm}_s{seed}")
  if arm == "char" and args.char_from:  # an existing run with the same flags (a study arm)
    work = os.path.join(args.char_from, f"rev_student_s{seed}")
  summary = os.path.join(work, "summary.json")
  if not os.path.exists(summary) and arm == "char" and args.char_from:
    raise SystemExit(f"--char_from: {summary} does not exist (a finished run is needed)")
  if not os.path.exists(summary):
    os.makedirs(work, exist_ok=True)
    if args.teacher and not os.path.exists(os.path.join(work, "teacher")):
      shutil.copytree(args.teacher, os.path.join(work, "teacher"))
    warm = os.path.join(args.warm_from, f"warm_start_s{seed}", "student_warm_start")
    if arm == "char" and args.warm_from and not os.path.exists(os.path.join(work, WARM)):
      shutil.copytree(warm, os.path.join(work, WARM))  # reused only if its cache key matches
    preset = ",".join(p for p in ("chain", args.preset) if p)
    extra = [e for e in args.extra.split(",") if e]
    cmd = [
      sys.executable,
      "-m",
      "dkd_jax.launch",
      f"--config={cfg}:{preset}",
      f"--workdir={work}",
      f"--config.seed={seed}",
      f"--config.train.steps={args.steps}",
      "--config.eval.teacher=False",
      f"--config.student.init={args.init}",
      *arm_flags,
      *extra,
    ]
    with open(work + ".log", "w") as log:
      subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
  with open(summary) as f:
    ev = json.load(f)["eval"]["chain"]
  return {
    "arm": arm,
    "seed": seed,
    "workdir": work,
    "avg_at_k": ev["avg_at_k"],
    "k": ev["k"],
    "len": ev["mean_response_len"],
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", required=True)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--teacher", default="")
  p.add_argument("--preset", default="")
  p.add_argument("--init", default="warm_start", choices=("warm_start", "random"))
  p.add_argument("--extra", default="")
  p.add_argument("--char_from", default="")
  p.add_argument("--warm_from", default="")
  args = p.parse_args()
  os.makedirs(args.out, exist_ok=True)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  rows = [run_arm(arm, s, args) for s in seeds for arm in ARMS]
  print("| arm | seed | Avg@k | k | mean length |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['arm']} | {r['seed']} | {r['avg_at_k']:.3f} | {r['k']} | {r['len']:.1f} |")
  mean = {a: sum(r["avg_at_k"] for r in rows if r["arm"] == a) / len(seeds) for a in ARMS}
  ratio = mean["bpe"] / mean["char"] if mean["char"] > 0 else float("nan")
  print(f"seed-mean Avg@k: bpe {mean['bpe']:.3f}, char {mean['char']:.3f}, ratio {ratio:.3f}")
  differ = config_differences(rows[0]["workdir"], rows[1]["workdir"])
  print(f"config fields that differ between the arms (seed {seeds[0]}): {differ}")
  with open(os.path.join(args.out, "xtok_bench.json"), "w") as f:
    json.dump({"rows": rows, "seed_mean": mean, "ratio": ratio, "differ": differ}, f, indent=2)


def config_differences(work_a: str, work_b: str) -> dict:
  """The flattened config.json fields whose values differ between two runs: the bench is a
  comparison of tokenizers only if these are the tokenizer's own fields."""

  def flat(d, pre=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{pre}{k}.") if isinstance(v, dict) else {pre + k: v})
    return out

  a, b = (flat(json.load(open(os.path.join(w, "config.json")))) for w in (work_a, work_b))
  return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


if __name__ == "__main__":
  main()
