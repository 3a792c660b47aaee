"""README command 1 on several seeds -> docs/readme_run.json -> the README's figures.

The README's figures for its first command come from here, so they cannot drift:

  python benchmarks/readme_run.py run [--seeds=0,1,2]   # fresh workdirs runs/readme_s<seed>
  python benchmarks/readme_run.py render                # README block from the JSON
  python benchmarks/readme_run.py check                 # exit 1 if the README disagrees

`run` starts `python -m dkd_jax.launch --config=configs/rev_teacher.py --workdir=DIR
--config.seed=S` once per seed, one at a time, each in an empty workdir (the teacher is
bootstrapped again each time). For each seed it records the wall time, the child's CPU
seconds, `uptime`'s load averages before and after, the per-phase times from the run's
log, and the summary lines it printed. Then it writes docs/readme_run.json and renders
the README block between the markers. tests/test_readme.py checks that the README equals
the rendering of the JSON and that every recorded seed meets the bar of issue 20.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON = os.path.join(ROOT, "docs", "readme_run.json")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- readme_run:begin -->", "<!-- readme_run:end -->"
COMMAND = "python -m dkd_jax.launch --config=configs/rev_teacher.py --workdir={workdir}"
# Log lines that close each phase (the first line of the log opens the run).
PHASES = (
  ("teacher", r"teacher bootstrap step (\d+)/\1\b|bootstrapped teacher: reusing"),
  ("warm_start", r"student at warm start on"),
  ("distill", r"distill step (\d+)/\1\b"),
  ("eval", r"summary: "),
)


def _load() -> str:
  return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []


def _clock(line: str) -> int | None:
  m = re.match(r"\[(\d\d):(\d\d):(\d\d)\]", line)
  return None if m is None else int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])


def phases(log_lines: list[str]) -> dict[str, int]:
  """Seconds spent in each phase, from the log's [HH:MM:SS] stamps (a phase the run did
  not have, e.g. a reused teacher, is absent)."""
  stamps = [(t, line) for line in log_lines if (t := _clock(line)) is not None]
  if not stamps:
    return {}
  prev, out = stamps[0][0], {}
  for name, pat in PHASES:
    hits = [t for t, line in stamps if re.search(pat, line)]
    if hits:
      out[name] = (hits[0] - prev) % 86400
      prev = hits[0]
  return out


def summary_lines(log_lines: list[str]) -> list[str]:
  """The summary the run printed: its 'summary:' line and the indented lines after it."""
  i = max(i for i, line in enumerate(log_lines) if "summary: " in line)
  out = [log_lines[i]]
  out += [line for line in log_lines[i + 1 :] if re.match(r"\[[\d:]+\]   ", line)]
  return [re.sub(r"^\[[\d:]+\] ", "", line).rstrip() for line in out]


def run_seed(seed: int, workdir: str) -> dict:
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  cmd = COMMAND.format(workdir=workdir).split() + ([f"--config.seed={seed}"] if seed else [])
  load0, cpu0, t0 = _load(), resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
  out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  wall, cpu1, load1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN), _load()
  if out.returncode:
    sys.exit(f"seed {seed} failed:\n{out.stdout[-3000:]}")
  # the run's output: its log lines and the plain progress lines (not a TTY)
  log = out.stdout.splitlines()
  s = json.load(open(os.path.join(ROOT, workdir, "summary.json")))
  pick = lambda m: {
    "avg_at_k": m["avg_at_k"],
    "pass_at_k": m["pass_at_k"][str(m["k"])],
    "k": m["k"],
    "length": m["mean_response_len"],
    "truncation": m["truncation_rate"],
  }
  return {
    "seed": seed,
    "command": " ".join(cmd),
    "date": datetime.date.today().isoformat(),
    "wall_s": round(wall, 1),
    "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
    "load_before": load0,
    "load_after": load1,
    "phases_s": phases(log),
    "student": {n: pick(m) for n, m in s["eval"].items()},
    "teacher": {n: pick(m) for n, m in s["teacher_eval"].items()},
    "warm_start": {n: pick(m) for n, m in s.get("warm_start_eval", {}).items()},
    "printed": summary_lines(log),
  }


def meets_bar(r: dict) -> bool:
  """Issue 20: student Avg@k >= 0.5 x the teacher's, truncation <= the teacher's + 0.1."""
  return all(
    r["student"][n]["avg_at_k"] >= 0.5 * t["avg_at_k"]
    and r["student"][n]["truncation"] <= t["truncation"] + 0.1
    for n, t in r["teacher"].items()
  )


def render(data: dict) -> str:
  """The README block: the printed summary of seed 0 (the command as written), then one
  row per seed."""
  runs = data["runs"]
  first = runs[0]
  lines = [
    BEGIN,
    f"Measured {first['date']} on {data['machine']} (`python benchmarks/readme_run.py run`"
    " regenerates this block and docs/readme_run.json; tests/test_readme.py checks them):",
    "",
    "```",
    *first["printed"],
    "```",
    "",
    "| seed | warm start Avg@4 | student Avg@4 | Pass@4 | length | trunc. "
    "| teacher Avg@4 | trunc. | wall (load avg) | CPU s |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in runs:
    (name, s), t = next(iter(r["student"].items())), next(iter(r["teacher"].values()))
    w = r["warm_start"].get(name, {})
    wall = f"{int(r['wall_s'] // 60)} min {int(r['wall_s'] % 60):02d} s"
    load = r["load_before"][0] if r["load_before"] else "?"
    lines.append(
      f"| {r['seed']} | {w.get('avg_at_k', float('nan')):.3f} | {s['avg_at_k']:.3f} | "
      f"{s['pass_at_k']:.3f} | {s['length']:.1f} | {s['truncation']:.2f} | "
      f"{t['avg_at_k']:.3f} | {t['truncation']:.2f} | {wall} ({load}) | {r['cpu_s']:.0f} |"
    )
  lines += ["", data.get("note", ""), END] if data.get("note") else [END]
  return "\n".join(lines)


def readme_block(text: str) -> str:
  i, j = text.index(BEGIN), text.index(END) + len(END)
  return text[i:j]


def write_readme(data: dict) -> None:
  text = open(README).read()
  open(README, "w").write(text.replace(readme_block(text), render(data)))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("part", choices=("run", "render", "check"))
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--machine", default="2 CPU cores")
  a = p.parse_args()
  if a.part == "run":
    runs = []
    for seed in [int(s) for s in a.seeds.split(",")]:
      r = run_seed(seed, f"runs/readme_s{seed}")
      print(json.dumps({k: r[k] for k in ("seed", "wall_s", "cpu_s", "load_before", "phases_s")}))
      print("\n".join(r["printed"]), flush=True)
      runs.append(r)
    old = json.load(open(JSON)) if os.path.exists(JSON) else {}
    data = {"machine": a.machine, "note": old.get("note", ""), "runs": runs}
    os.makedirs(os.path.dirname(JSON), exist_ok=True)
    json.dump(data, open(JSON, "w"), indent=1)
    write_readme(data)
    bad = [r["seed"] for r in runs if not meets_bar(r)]
    sys.exit(f"seeds {bad} miss the bar" if bad else 0)
  data = json.load(open(JSON))
  if a.part == "render":
    write_readme(data)
  elif readme_block(open(README).read()) != render(data):
    sys.exit("README.md's figures differ from docs/readme_run.json: run `render`")


if __name__ == "__main__":
  main()
