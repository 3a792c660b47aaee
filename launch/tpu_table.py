"""The README's "Which TPU slice" table: `python -m dkd_jax.aot` over Qwen3 pairs x slices x
two quadrants, resumable, one JSON line per finished row.

  python launch/tpu_table.py run [--out=docs/tpu_table.jsonl] [--only_pair=8b_1.7b]
  python launch/tpu_table.py render [--out=docs/tpu_table.jsonl] [--readme=README.md]

`run` skips rows already in the JSONL (kill it and start it again: it resumes) and runs
each command at low priority; a row that fails is recorded with its error and retried on
the next `run`. `render` prints the table with every row of the grid, "not compiled yet"
where the JSONL has none. Compiles of 8B/32B models take minutes on a small machine:
    nohup nice -n 10 python launch/tpu_table.py run > /tmp/tpu_table.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/qwen3_pair.py"
# (preset, teacher, student): the README's pairs, smallest first.
PAIRS = [
  ("", "Qwen3-1.7B", "Qwen3-0.6B"),
  ("8b_1.7b", "Qwen3-8B", "Qwen3-1.7B"),
  ("32b_8b", "Qwen3-32B", "Qwen3-8B"),
]
# Slices in the order they are compiled (the ones most runs would rent first).
SLICES = ["v5e-16", "v5p-8", "v6e-8", "v5e-8", "v5e-64", "v5p-32", "v6e-16"]
TABLE_SLICES = ["v5e-8", "v5e-16", "v5e-64", "v5p-8", "v5p-32", "v6e-8", "v6e-16"]
TOPK = 64
QUADRANTS = {
  "student_rkl": ("student prefixes, reverse KL (on-policy)", []),
  "teacher_topk": (
    f"teacher prefixes, forward KL, top-{TOPK} cache",
    [
      "--config.objective.prefix=teacher",
      "--config.objective.kl=forward",
      "--config.data.teacher_source=cached_topk",
      f"--config.objective.teacher_top_k={TOPK}",
    ],
  ),
}
GROUPS = "train,rollout,topk"  # the evaluation's functions are left to a separate check


def command(preset: str, slice_: str, quadrant: str, out: str) -> list[str]:
  cfg = CONFIG + (f":{preset}" if preset else "")
  return [
    sys.executable,
    "-m",
    "dkd_jax.aot",
    f"--config={cfg}",
    f"--topology={slice_}",
    "--mesh=auto",
    "--max_fits=1",
    f"--only={GROUPS}",
    f"--out={out}",
    *QUADRANTS[quadrant][1],
  ]


def key(preset, slice_, quadrant) -> str:
  return f"{preset or '1.7b_0.6b'}|{slice_}|{quadrant}"


def load(path: str) -> dict:
  rows = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          r = json.loads(line)
          rows[r["key"]] = r  # a later line (a retry) wins
  return rows


def _compact(result: dict) -> dict:
  """What the table and BUILD_NOTES need of a report: the row, the candidates' verdicts,
  and the best mesh's per-function bytes and compile times."""
  best = result.get("best") or {}
  fns = {
    n: {k: f[k] for k in ("argument_bytes", "temp_bytes", "peak_bytes", "fits", "compile_s")}
    for n, f in (best.get("functions") or {}).items()
  }
  keep = (
    "step_peak_bytes",
    "hbm_bytes",
    "persistent_bytes",
    "decode_copy_bytes",
    "train_phase_bytes",
    "rollout_phase_bytes",
    "topk_pass_peak_bytes",
    "topk_pass_fits",
    "model_flops",
    "rollout_flops",
    "roofline",
    "roofline_s",
    "compile_s",
  )
  return {
    "row": result["row"],
    "fitting": result.get("fitting"),
    "candidates": result.get("candidates"),
    "best": {k: best.get(k) for k in keep} | {"functions": fns} if best else None,
    "wall_s": result.get("wall_s"),
  }


def _claim(out: str, k: str) -> bool:
  """Several `run` workers may share one JSONL: a row is claimed by creating
  OUT.claims/KEY (with the worker's pid); a claim whose pid is gone is taken over."""
  d = out + ".claims"
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, k.replace("|", "__"))
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      os.write(fd, str(os.getpid()).encode())
      os.close(fd)
      return True
    except FileExistsError:
      try:
        pid = int(open(path).read().strip() or 0)
        os.kill(pid, 0)
        return False  # a live worker has it
      except (ValueError, ProcessLookupError, PermissionError):
        os.remove(path)
  return False


def run(args) -> None:
  # student_rkl for every pair x slice before any teacher_topk cell: each cell costs
  # minutes of CPU, and the on-policy quadrant is the table's first question
  grid = [
    (p, s, q)
    for q in QUADRANTS
    for s in SLICES
    for p, _, _ in PAIRS
    if (not args.only_pair or p == args.only_pair) and (not args.only_slice or s == args.only_slice)
  ]
  print(f"{len(grid)} rows in the grid", flush=True)
  for p, s, q in grid:
    if "row" in load(args.out).get(key(p, s, q), {}) or not _claim(args.out, key(p, s, q)):
      continue
    tmp = f"{args.out}.{os.getpid()}.json"
    cmd = command(p, s, q, tmp)
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {key(p, s, q)}: {' '.join(cmd[1:])}", flush=True)
    log_dir = args.logs or (args.out + ".logs")
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, key(p, s, q).replace("|", "__") + ".log"), "w") as err:
      proc = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, check=False
      )
    proc.stderr = open(err.name).read()
    rec = {"key": key(p, s, q), "pair": p or "1.7b_0.6b", "slice": s, "quadrant": q}
    rec["command"] = (
      "python "
      + " ".join(cmd[1 : -len(QUADRANTS[q][1]) or None]).replace(f" --out={tmp}", "")
      + (" " + " ".join(QUADRANTS[q][1]) if QUADRANTS[q][1] else "")
    )
    rec["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    rec["elapsed_s"] = round(time.time() - t0, 1)
    if proc.returncode == 0 and os.path.exists(tmp):
      with open(tmp) as f:
        rec.update(_compact(json.loads(f.read())))
      os.remove(tmp)
    else:
      rec["error"] = (proc.stderr or "")[-2000:]
    with open(args.out, "a") as f:
      f.write(json.dumps(rec) + "\n")
    print(f"  -> {rec.get('row', 'ERROR')} ({rec['elapsed_s']} s)", flush=True)


def _refused(r) -> bool:
  """Rows written before `gib_is_lower_bound`: a function the compiler refused is recorded
  with no output or code bytes (peak = arguments + the temporaries its error named)."""
  fns = (r.get("best") or {}).get("functions") or {}
  return any(
    not f["fits"] and f["peak_bytes"] == f["argument_bytes"] + f["temp_bytes"] for f in fns.values()
  )


def _cell(r) -> str:
  if r is None or "row" not in r:
    return "not compiled yet" if r is None else "compile failed"
  row = r["row"]
  if row.get("mesh") is None:
    cands = [c for c in r.get("candidates") or [] if "persistent_bytes" in c]
    least = min((c["persistent_bytes"] for c in cands), default=None)
    why = f" (≥ {least / 2**30:.0f} GiB/chip of weights and state on every mesh)" if least else ""
    return f"no{why}"
  mesh = "×".join(str(x) for x in row["mesh"])
  verdict = "**yes**" if row["fits"] else "no"
  hbm = (r.get("best") or {}).get("hbm_bytes") or row["hbm_gib"] * 2**30
  at_least = "≥ " if row.get("gib_is_lower_bound") or _refused(r) else ""
  return (
    f"{verdict} · ({mesh}) · {at_least}{row['gib']:.1f}/{hbm / 2**30:.2f} GiB · "
    f"{row['roofline_s']:.2f} s"
  )


def render(args) -> str:
  rows = load(args.out)
  lines = []
  for q, (title, _) in QUADRANTS.items():
    lines.append(f"**{title}**\n")
    # the command of every cell in this table: the pair's preset and the slice vary
    cmd = " ".join(command("PAIR", "SLICE", q, "x")[1:]).replace(" --out=x", "")
    cmd = cmd.replace(f"{CONFIG}:PAIR", f"{CONFIG}[:8b_1.7b|:32b_8b]")
    lines.append(f"`python {cmd}`\n")
    lines.append("| teacher → student | " + " | ".join(TABLE_SLICES) + " |")
    lines.append("|---|" + "---|" * len(TABLE_SLICES))
    for p, t, s in PAIRS:
      cells = [_cell(rows.get(key(p, sl, q))) for sl in TABLE_SLICES]
      lines.append(f"| {t} → {s} | " + " | ".join(cells) + " |")
    lines.append("")
  text = "\n".join(lines)
  print(text)
  if args.readme:
    with open(args.readme) as f:
      readme = f.read()
    start, end = "<!-- tpu_table:start -->", "<!-- tpu_table:end -->"
    a, b = readme.index(start) + len(start), readme.index(end)
    with open(args.readme, "w") as f:
      f.write(readme[:a] + "\n" + text + readme[b:])
  return text


def main() -> None:
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("mode", choices=("run", "render"))
  ap.add_argument("--out", default=os.path.join(ROOT, "docs", "tpu_table.jsonl"))
  ap.add_argument("--only_pair", default=None)
  ap.add_argument("--only_slice", default=None)
  ap.add_argument("--readme", default=None, help="render: also write the table into this file")
  ap.add_argument("--logs", default=None, help="per-row stderr logs (default OUT.logs/)")
  args = ap.parse_args()
  run(args) if args.mode == "run" else render(args)


if __name__ == "__main__":
  main()
