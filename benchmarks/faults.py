"""Every fault of issue 23 against real runs of `configs/rev_student.py:tiny`, as a table.

  python benchmarks/faults.py                 # every fault (about 15 min on 2 CPU cores)
  python benchmarks/faults.py --only sigterm  # the rows whose name contains 'sigterm'
  python benchmarks/faults.py --kills 3       # fewer kill -9 during async saves

Each row: the fault, what the run did, steps lost (steps computed but not in the
checkpoint the next run resumed from, so computed twice), rows duplicated (metrics.jsonl
rows holding a step twice) and data lost ("none" when the finished run's metrics, eval
and step rows equal an uninterrupted run's, the previous checkpoint stayed intact, or
the fault was refused before any work). The tests in tests/ run smaller versions of the
same scenarios through these functions.

The last line printed is one JSON object {"rows": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIG = "configs/rev_student.py:tiny"
# A small run: seconds per process start beyond compilation, steps of ~0.1-0.3 s.
SMALL = (
  "--config.teacher.bootstrap_steps=30",
  "--config.eval.num_problems=2",
  "--config.eval.k=1",
  "--config.eval.teacher=False",
  "--config.data.arithmetic.num_train=256",
)
# Wall-clock and throughput metrics differ between any two runs; everything else must not.
TIMING = (
  "step_time",
  "train_time",
  "gen_time",
  "tokens_per_s",
  "mfu",
  "gen_seconds_student",
  "gen_seconds_teacher",
)


# ---------------------------------------------------------------------------- launching


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def env(devices: int = 1) -> dict:
  return dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )


def launch_cmd(work: str, *extra: str, config: str = CONFIG) -> list[str]:
  return [
    sys.executable,
    "-m",
    "dkd_jax.launch",
    f"--config={config}",
    f"--workdir={work}",
    *SMALL,
    *extra,
  ]


def start(work: str, *extra: str, nproc: int = 1, prelude: str = "") -> list[subprocess.Popen]:
  """The run as `nproc` processes (localhost coordinator, gloo); stdout+stderr piped.
  `prelude`: Python run before the CLI in the same process (a fault injected by
  monkeypatching, e.g. a writer that raises ENOSPC)."""
  port = free_port()
  procs = []
  for i in range(nproc):
    cmd = launch_cmd(work, *extra)
    if nproc > 1:
      cmd += [f"--coordinator=localhost:{port}", f"--num_processes={nproc}", f"--process_id={i}"]
    if prelude:
      code = prelude + "\nimport runpy; runpy.run_module('dkd_jax.launch', run_name='__main__')"
      cmd = [sys.executable, "-c", code, *cmd[3:]]
    procs.append(
      subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env(8 // nproc if nproc > 1 else 1),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
    )
  return procs


def finish(procs, timeout: float = 900) -> list[tuple[int, str]]:
  """[(returncode, output)] per process, once all have ended."""
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  return [(p.returncode, out) for p, out in zip(procs, outs)]


def run(work: str, *extra: str, nproc: int = 1, prelude: str = "", timeout: float = 900):
  """Starts and waits; returns [(returncode, output)] per process."""
  return finish(start(work, *extra, nproc=nproc, prelude=prelude), timeout)


def rows(work: str) -> list[dict]:
  path = os.path.join(work, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return [json.loads(line) for line in open(path) if line.strip()]


def n_rows(work: str) -> int:
  path = os.path.join(work, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for line in f if line.endswith("\n"))


def steps_on_disk(work: str) -> list[int]:
  d = os.path.join(work, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def log_lines(work: str, needle: str) -> list[str]:
  path = os.path.join(work, "log.txt")
  return [line for line in open(path) if needle in line] if os.path.exists(path) else []


def teacher_cache(root: str) -> str:
  """A bootstrapped tiny teacher (one short run), copied into each workdir as its cache."""
  work = os.path.join(root, "teacher_run")
  if not os.path.isdir(os.path.join(work, "teacher")):
    ((rc, out),) = run(work, "--config.train.steps=1", "--config.eval.num_problems=1")
    assert rc == 0, out[-3000:]
  return os.path.join(work, "teacher")


def fresh(root: str, name: str, teacher: str) -> str:
  work = os.path.join(root, name)
  shutil.rmtree(work, ignore_errors=True)
  shutil.copytree(teacher, os.path.join(work, "teacher"))
  return work


def _msg(line: str) -> str:
  """A log line without its [HH:MM:SS] stamp."""
  return line.split("] ", 1)[-1].strip()


def duplicated(work: str) -> int:
  steps = [r["step"] for r in rows(work)]
  return len(steps) - len(set(steps))


def _same(x, y, rtol: float) -> bool:
  if isinstance(x, dict) and isinstance(y, dict):
    return x.keys() == y.keys() and all(_same(x[k], y[k], rtol) for k in x)
  if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
    # Confidence intervals and per-problem columns are lists of floats: the tolerance
    # applies inside them too, not only to scalar fields.
    return len(x) == len(y) and all(_same(a, b, rtol) for a, b in zip(x, y))
  if isinstance(x, float) and isinstance(y, (int, float)) and rtol:
    return abs(x - y) <= rtol * max(abs(x), abs(y)) or x == y
  return x == y


def compare(work: str, base: str, rtol: float = 0.0) -> str:
  """'none' when `work` finished the same run as `base`: every step once, the same
  metrics (timing aside) and eval, bit for bit (or floats within `rtol`, for a base
  run on another process layout); otherwise what differs."""
  a, b = rows(work), rows(base)
  if [r["step"] for r in a] != [r["step"] for r in b]:
    return f"step rows {[r['step'] for r in a]} != {[r['step'] for r in b]}"
  for x, y in zip(a, b):
    diff = [k for k in y if k not in TIMING and not _same(x.get(k), y[k], rtol)]
    if diff:
      return f"step {x['step']}: {diff[0]} {x.get(diff[0])} != {y[diff[0]]}"
  sa, sb = (json.load(open(os.path.join(w, "summary.json")))["eval"] for w in (work, base))
  return "none" if _same(sa, sb, rtol) else f"eval differs: {sa} != {sb}"


def wait_rows(work: str, n: int, procs, timeout: float = 600) -> None:
  t0 = time.time()
  while n_rows(work) < n:
    if any(p.poll() is not None for p in procs):
      raise RuntimeError(f"the run ended before step {n}:\n" + procs[0].communicate()[0][-3000:])
    if time.time() - t0 > timeout:
      raise TimeoutError(f"no step {n} in {work} after {timeout}s")
    time.sleep(0.005)


# ---------------------------------------------------------------------------- scenarios


def baseline(root: str, teacher: str, steps: int, nproc: int = 1) -> str:
  """The uninterrupted run every fault's finished run is compared with."""
  work = os.path.join(root, f"baseline_{steps}_{nproc}p")
  if os.path.exists(os.path.join(work, "summary.json")):  # a --root reused: already run
    return work
  work = fresh(root, f"baseline_{steps}_{nproc}p", teacher)
  for i, (rc, out) in enumerate(run(work, f"--config.train.steps={steps}", nproc=nproc)):
    assert rc == 0, f"process {i}:\n{out[-3000:]}"
  return work


def sigterm(
  root: str, teacher: str, base: str, *, steps: int, nproc: int = 1, seed=None, rtol: float = 0.0
) -> dict:
  """SIGTERM (to the last process only) once a random step's row exists; the run must exit
  0 within 30 s with a checkpoint at the step it stopped at; rerunning must finish the
  baseline's run exactly."""
  rnd = random.Random(seed)
  at = rnd.randint(2, steps - 3)
  work = fresh(root, f"sigterm_{nproc}p", teacher)
  extra = (f"--config.train.steps={steps}",)
  procs = start(work, *extra, nproc=nproc)
  wait_rows(work, at, procs)
  t0 = time.time()
  procs[-1].send_signal(signal.SIGTERM)
  outs = finish(procs, timeout=120)
  exit_s = time.time() - t0
  stopped = [r["step"] for r in rows(work)]
  ckpts = steps_on_disk(work)
  lines = log_lines(work, "preempted")
  assert all(rc == 0 for rc, _ in outs), [o[-2000:] for _, o in outs]
  assert exit_s < 30, f"exit took {exit_s:.1f}s"
  assert len(lines) == 1, lines
  assert ckpts and ckpts[-1] == stopped[-1] >= at, (ckpts, stopped, at)
  outs2 = run(work, *extra, nproc=nproc)
  assert all(rc == 0 for rc, _ in outs2), [o[-2000:] for _, o in outs2]
  resumed = log_lines(work, "resumed from step")
  data = compare(work, base, rtol)
  return dict(
    fault=f"SIGTERM at step {at}"
    + (f" (process {nproc - 1} of {nproc} only)" if nproc > 1 else ""),
    did=f"exit 0 in {exit_s:.1f}s, checkpoint step {ckpts[-1]}; rerun {_msg(resumed[-1])}",
    steps_lost=stopped[-1] - ckpts[-1],
    rows_duplicated=duplicated(work),
    data_lost=data,
  )


def _clip(text: str, n: int) -> str:
  """`text` cut to about n characters at a word boundary, marked, for one table cell."""
  return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def _tmp_dirs(work: str) -> list[str]:
  d = os.path.join(work, "checkpoints")
  return [n for n in os.listdir(d) if "tmp" in n] if os.path.isdir(d) else []


def kill9_during_saves(
  root: str, teacher: str, base: str, *, steps: int, kills: int, seed=None
) -> dict:
  """kill -9 while an async checkpoint write is in flight (a random delay after its
  temporary directory appears), `kills` times, rerunning after each; every rerun must
  resume from a complete step (the newest committed one) and the finished run must equal
  the uninterrupted one with each step's row once."""
  rnd = random.Random(seed)
  work = fresh(root, "kill9", teacher)
  extra = (f"--config.train.steps={steps}", "--config.train.ckpt_every=1")
  lost, during, resumed_ok, committed, during_total, checked = 0, 0, 0, [], 0, 0

  def resumed(p) -> bool:  # the rerun names the newest committed step as its start
    want, t0 = f"resumed from step {committed[-1]}", time.time()
    while not log_lines(work, want) and p.poll() is None and time.time() - t0 < 600:
      time.sleep(0.02)
    return bool(log_lines(work, want))

  for _ in range(kills):
    if committed and committed[-1] >= steps - 3:
      break
    (p,) = start(work, *extra)
    if committed:
      resumed_ok, checked = resumed_ok + resumed(p), checked + 1
    wait_rows(work, (committed[-1] if committed else 0) + rnd.randint(1, 3), [p])
    # Kill only once a step is committed: under load the first write can still be in
    # flight at every kill, and a rerun with nothing to resume from tests nothing.
    while not steps_on_disk(work) and p.poll() is None:
      time.sleep(0.01)
    # A random point inside a write: on a quiet machine a write can finish within the
    # delay, so a write that committed first sends the kill into the next one, earlier.
    delay = rnd.uniform(0.0, 0.05)
    while p.poll() is None:
      while not _tmp_dirs(work) and p.poll() is None:
        time.sleep(0.0005)
      time.sleep(delay)
      if _tmp_dirs(work):
        break
      delay /= 2
    during += bool(_tmp_dirs(work))
    during_total += 1
    p.kill()
    p.wait()
    committed = steps_on_disk(work)
    lost += n_rows(work) - (committed[-1] if committed else 0)
  (p,) = start(work, *extra)
  if committed:
    resumed_ok, checked = resumed_ok + resumed(p), checked + 1
  ((rc, out),) = finish([p])
  assert rc == 0, out[-3000:]
  n = during_total  # kills made
  return dict(
    fault=f"kill -9 during async checkpoint writes (x{n})",
    did=f"{during}/{n} kills landed with a write in flight; {resumed_ok}/{checked} reruns resumed "
    "from the newest committed step; the last one finished",
    steps_lost=lost,
    rows_duplicated=duplicated(work),
    data_lost=compare(work, base),
  )


def refused(root: str, name: str, work: str, *extra: str, prelude: str = "") -> dict:
  """A fault that must be refused before any work: exit 1, one line, nothing written."""
  t0 = time.time()
  ((rc, out),) = run(work, *extra, prelude=prelude, timeout=300)
  lines = [line for line in out.splitlines() if line.startswith("error: ")]
  assert rc == 1 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
  return dict(
    fault=name,
    did=f"refused in {time.time() - t0:.0f}s (exit 1): {lines[0][7:]}",
    steps_lost=0,
    rows_duplicated=0,
    data_lost="none" if not rows(work) else "rows written",
  )


def workdir_faults(root: str) -> list[dict]:
  afile = os.path.join(root, "a_file")
  open(afile, "w").close()
  return [
    refused(root, "workdir missing (under a file)", os.path.join(afile, "run")),
    refused(root, "workdir unwritable (/sys, read-only)", "/sys/dkd_faults_run"),
    refused(
      root,
      "too little free space for one checkpoint",
      os.path.join(root, "small_disk"),
      prelude="from dkd_jax.core import paths; paths.free_bytes = lambda p: 10**5",
    ),
  ]


ENOSPC_PRELUDE = """
import errno
from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh
_real, _calls = jh.JsonCheckpointHandler._save_fn, [0]
async def _full(self, x, directory):
  _calls[0] += 1
  if _calls[0] == 2:
    raise OSError(errno.ENOSPC, "No space left on device")
  return await _real(self, x, directory)
jh.JsonCheckpointHandler._save_fn = _full
"""

NAN_PRELUDE = """
import jax, jax.numpy as jnp
from dkd_jax.train import step as _train
_real = _train.jit_train_step
def _patched(*a, **k):
  fn, calls = _real(*a, **k), [0]
  def step(state, batch, teacher):
    calls[0] += 1
    if calls[0] == {at}:
      if {student}:
        state = dict(state, params=jax.tree.map(lambda x: x * jnp.nan, state["params"]))
      else:
        teacher = jax.tree.map(lambda x: x * jnp.{bad}, teacher)
    return fn(state, batch, teacher)
  return step
_train.jit_train_step = _patched
"""


def stopped_run(root, teacher, base, name, prelude, *, steps: int, resume: bool) -> dict:
  """A mid-run fault: exit 1 with one line; the latest checkpoint is the last good step;
  with `resume`, a rerun without the fault finishes the baseline's run."""
  work = fresh(root, name.split(" ")[0] + "_" + name.split(" ")[1], teacher)
  extra = (f"--config.train.steps={steps}", "--config.train.ckpt_every=2")
  ((rc, out),) = run(work, *extra, prelude=prelude)
  stop = [ln for ln in log_lines(work, "step") if "metric" in ln or "failed" in ln]
  assert rc == 1 and len(stop) == 1 and "Traceback" not in out, out[-3000:]
  done, ckpts = n_rows(work), steps_on_disk(work)
  pairs = zip(rows(work), rows(base))
  same = all(all(r[k] == b[k] for k in b if k not in TIMING) for r, b in pairs)
  latest = ckpts[-1] if ckpts else None
  did = f"exit 1: {_clip(_msg(stop[0]), 150)}; latest checkpoint step {latest}"
  data = "none" if same and ckpts and ckpts[-1] <= done else "rows differ from the baseline"
  if resume:
    ((rc, out),) = run(work, *extra)
    assert rc == 0, out[-3000:]
    did += f"; rerun {_msg(log_lines(work, 'resumed from')[-1])}, finished"
    data = compare(work, base)
  return dict(
    fault=name,
    did=did,
    steps_lost=done - (ckpts[-1] if ckpts else 0),
    rows_duplicated=duplicated(work),
    data_lost=data,
  )


def kernel_inputs() -> list[dict]:
  """kl.distill_loss's own inputs (in this process): each refused with a clear error, or
  (a NaN in a masked row) harmless."""
  import jax
  import numpy as np

  from dkd_jax.objectives import kl

  r = np.random.default_rng(0)
  hs, Ws = r.normal(size=(8, 4)).astype(np.float32), r.normal(size=(4, 16)).astype(np.float32)
  ht, Wt = r.normal(size=(8, 4)).astype(np.float32), r.normal(size=(4, 16)).astype(np.float32)
  mask, tok = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32), np.arange(8, dtype=np.int32)
  S = kl.KLSpec
  sampled = S("reverse", estimator="sampled_token")

  def call(spec=sampled, h=hs, m=mask, t=tok, alpha=None):
    return kl.distill_loss(h, Ws, ht, Wt, m, spec, tokens_N=t, alpha=alpha)[0]

  def refused_(name, fn) -> dict:
    try:
      fn()
    except ValueError as e:
      return dict(fault=f"loss kernel: {name}", did=f"refused: {_clip(str(e), 110)}")
    return dict(fault=f"loss kernel: {name}", did="NOT refused")

  nan_row = hs.copy()
  nan_row[6] = np.nan
  g = jax.grad(lambda h: call(S("reverse"), h=h))(nan_row)
  same = float(call(S("reverse"), h=nan_row)) == float(call(S("reverse")))
  out = [
    refused_("token id 16 (V=16)", lambda: call(t=np.where(tok == 3, 16, tok))),
    refused_("token id -1", lambda: call(t=np.where(tok == 3, -1, tok))),
    dict(
      fault="loss kernel: NaN in a masked row",
      did=f"harmless: loss unchanged {same}, gradient finite {bool(np.isfinite(g).all())}",
    ),
    refused_("alpha=np.float32(1.5)", lambda: call(S("mixed"), alpha=np.float32(1.5))),
    refused_("temperature=inf", lambda: call(S("reverse", temperature=float("inf")))),
    refused_("negative mask", lambda: call(m=np.where(mask == 1, -1.0, 0.0).astype(np.float32))),
  ]
  for row in out:
    ok = row["did"].startswith("refused") or (same and "finite True" in row["did"])
    row.update(steps_lost=0, rows_duplicated=0, data_lost="none" if ok else "a wrong loss")
  return out


def hostile_data() -> dict:
  """The property-based tests (hypothesis) of the readers, the TFDS builder and the
  top-k store, run as they run in CI."""
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-q",
      "-p",
      "no:cacheprovider",
      "tests/data/test_hostile_data.py",
    ],
    cwd=ROOT,
    env=env(),
    capture_output=True,
    text=True,
    timeout=600,
  )
  last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
  return dict(
    fault="hostile data files and top-k cache (hypothesis)",
    did=f"each record read correctly or the file refused at start with file:line ({last})",
    steps_lost=0,
    rows_duplicated=0,
    data_lost="none" if out.returncode == 0 else "a property failed",
  )


# ---------------------------------------------------------------------------- the table


def table(results: list[dict]) -> str:
  cols = ("fault", "did", "steps_lost", "rows_duplicated", "data_lost")
  heads = ("fault", "what the run did", "steps lost", "rows duplicated", "data lost")
  lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
  for r in results:
    lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--only", default="", help="run the scenarios whose name contains this")
  ap.add_argument("--kills", type=int, default=10, help="kill -9 during this many async saves")
  ap.add_argument("--steps", type=int, default=24)
  ap.add_argument("--seed", type=int, default=None)
  ap.add_argument("--root", default="", help="work directory (default: a temporary one)")
  args = ap.parse_args()
  root = args.root or tempfile.mkdtemp(prefix="dkd_faults_")
  teacher = teacher_cache(root)
  bases: dict = {}

  def base(nproc=1):
    if nproc not in bases:
      bases[nproc] = baseline(root, teacher, args.steps, nproc)
    return bases[nproc]

  scenarios = {
    "sigterm_1p": lambda: sigterm(root, teacher, base(1), steps=args.steps, seed=args.seed),
    "sigterm_2p": lambda: sigterm(
      root, teacher, base(2), steps=args.steps, nproc=2, seed=args.seed
    ),
    "kill9_async_save": lambda: kill9_during_saves(
      root, teacher, base(1), steps=args.steps, kills=args.kills, seed=args.seed
    ),
    "workdir_disk": lambda: workdir_faults(root),
    "enospc_mid_run": lambda: stopped_run(
      root,
      teacher,
      base(1),
      "ENOSPC writing checkpoint step 4",
      ENOSPC_PRELUDE,
      steps=args.steps,
      resume=True,
    ),
    "nan_teacher": lambda: stopped_run(
      root,
      teacher,
      base(1),
      "teacher NaN logits at step 5",
      NAN_PRELUDE.format(at=5, student=False, bad="nan"),
      steps=args.steps,
      resume=False,
    ),
    "inf_teacher": lambda: stopped_run(
      root,
      teacher,
      base(1),
      "teacher inf logits at step 5",
      NAN_PRELUDE.format(at=5, student=False, bad="inf"),
      steps=args.steps,
      resume=False,
    ),
    "nan_student": lambda: stopped_run(
      root,
      teacher,
      base(1),
      "student NaN loss at step 5",
      NAN_PRELUDE.format(at=5, student=True, bad="nan"),
      steps=args.steps,
      resume=False,
    ),
    "kernel_inputs": kernel_inputs,
    "hostile_data": hostile_data,
  }
  results = []
  for name, fn in scenarios.items():
    if args.only and args.only not in name:
      continue
    t0 = time.time()
    try:
      got = fn()
      results.extend(got if isinstance(got, list) else [got])
    except Exception as e:  # a scenario that fails is a row too, with its reason
      results.append(
        dict(
          fault=name, did=f"FAILED: {e}"[:300], steps_lost="?", rows_duplicated="?", data_lost="?"
        )
      )
    print(f"[{time.time() - t0:.0f}s] {name}: {results[-1]}", file=sys.stderr, flush=True)
  print(table(results))
  print(json.dumps({"rows": results}))


if __name__ == "__main__":
  main()
