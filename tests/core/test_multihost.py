"""Two processes x 4 CPU devices (gloo collectives, localhost coordinator) against one
process x 8 devices: the same run, the same metrics, one metrics row per step, and a
checkpoint written by two processes restores in one.

Tolerance: the two layouts run the same SPMD program on the same (8, 1, 1) mesh; only
the cross-process all-reduces differ (gloo vs in-process), which reorders fp32 sums.
Measured differences are <= 2e-7 relative; floats must agree to rtol 1e-5 (a few ulp
of every reduction, with margin), and everything discrete (response lengths, token
counts, truncation, Avg@k) exactly: a reordered sum that flipped a sampled token would
show there.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SMALL = [
  "--config.teacher.bootstrap_steps=30",
  "--config.train.steps=2",
  "--config.train.ckpt_every=2",
  "--config.eval.num_problems=2",
  "--config.data.arithmetic.num_train=256",
]
TIMING = (
  "step_time",
  "train_time",
  "gen_time",
  "tokens_per_s",
  "mfu",
  "gen_seconds_student",
  "gen_seconds_teacher",
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(
    os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu"
  )


def _launch(config, work, *extra):
  return [
    sys.executable,
    "-m",
    "dkd_jax.launch",
    f"--config={config}",
    f"--workdir={work}",
    *SMALL,
    *extra,
  ]


def run_one(config, work, *extra):
  out = subprocess.run(
    _launch(config, work, *extra),
    cwd=ROOT,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def run_two(config, work, *extra):
  port = _free_port()
  procs = [
    subprocess.Popen(
      _launch(
        config,
        work,
        f"--coordinator=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        *extra,
      ),
      cwd=ROOT,
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"


def rows(work):
  return [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]


def assert_same_run(a, b):
  """Metric rows and eval of two workdirs agree (floats rtol 1e-5, discrete exactly)."""
  ra, rb = rows(a), rows(b)
  assert [r["step"] for r in ra] == [r["step"] for r in rb]
  for x, y in zip(ra, rb):
    for k in x:
      if k not in TIMING:
        np.testing.assert_allclose(y[k], x[k], rtol=1e-5, err_msg=f"step {x['step']} {k}")
  ea = json.load(open(os.path.join(a, "summary.json")))["eval"]["arithmetic"]
  eb = json.load(open(os.path.join(b, "summary.json")))["eval"]["arithmetic"]
  for k in ("avg_at_k", "pass_at_k", "mean_response_len", "truncation_rate", "invalid_tokens"):
    assert ea[k] == eb[k], k
  for k in ("mean_entropy", "fkl", "rkl"):
    np.testing.assert_allclose(eb[k], ea[k], rtol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A bootstrapped tiny teacher (one process), copied into each workdir as its cache."""
  work = str(tmp_path_factory.mktemp("mh_teacher"))
  run_one(
    "configs/fwd_teacher.py:tiny", work, "--config.train.steps=1", "--config.eval.num_problems=1"
  )
  return os.path.join(work, "teacher")


def _workdir(tmp_path, name, teacher):
  work = str(tmp_path / name)
  shutil.copytree(teacher, os.path.join(work, "teacher"))
  return work


@pytest.mark.parametrize("config", ["configs/rev_student.py:tiny", "configs/fwd_teacher.py:tiny"])
def test_two_processes_match_one(config, tmp_path, teacher):
  one, two = _workdir(tmp_path, "one", teacher), _workdir(tmp_path, "two", teacher)
  run_one(config, one)
  run_two(config, two)
  assert_same_run(one, two)
  assert [r["step"] for r in rows(two)] == [1, 2]  # each row written once
  assert "ocdbt.process_1" in os.listdir(os.path.join(two, "checkpoints", "2", "state"))
  if "student" in config:
    # The checkpoint the two processes wrote resumes in one process.
    # A longer run from the same checkpoint: a config change, allowed explicitly.
    out = run_one(config, two, "--config.train.steps=3", "--allow_config_change")
    assert "resumed from step 2" in out.stderr
    assert [r["step"] for r in rows(two)] == [1, 2, 3]
