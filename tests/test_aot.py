"""`python -m dkd_jax.aot`: the compile check's command line, end to end on v5e:2x2."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "dkd_jax.aot", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_help_names_the_flags():
  out = _run("--help")
  text = out.stdout + out.stderr
  assert "Traceback" not in text, text[-3000:]
  for flag in ("--topology", "--mesh", "--only", "--require_fit"):
    assert flag in text


@pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed: the TPU compiler comes with pip install -e '.[tpu]'",
)
def test_json_last_with_the_step_and_every_function(tmp_path):
  out = _run(
    "--config=configs/rev_student.py:tiny",
    "--topology=v5e-4",
    "--mesh=1,-1,1",
    "--only=train,rollout",
    f"--out={tmp_path / 'r.json'}",
    "--require_fit",
  )
  assert out.returncode == 0, out.stderr[-3000:]
  rep = json.loads(out.stdout.strip().splitlines()[-1])
  assert rep == json.loads((tmp_path / "r.json").read_text())
  assert rep["mesh"] == [1, 4, 1] and rep["topology"] == "v5e:2x2"
  for key in ("step_peak_bytes", "hbm_bytes", "model_flops", "roofline_s", "fits", "collectives"):
    assert key in rep, key
  assert set(rep["functions"]) == {
    "train_step",
    "rollout/student/decode_params",
    "rollout/student/prefill_batch",
    "rollout/student/insert",
    "rollout/student/generate_steps",
  }
  for f in rep["functions"].values():
    assert {"argument_bytes", "output_bytes", "temp_bytes", "peak_bytes", "fits"} <= set(f)
    assert set(f["collectives"]) >= {"all-gather", "reduce-scatter", "all-reduce", "all-to-all"}
  assert rep["row"]["fits"] is True
  # FSDP over 4 chips: the train step gathers its weights
  assert set(rep["collectives"]) == set(rep["functions"])
  assert rep["collectives"]["train_step"]["all-gather"]["count"] > 0
  assert "train_step" in out.stdout and "step_peak" in out.stdout  # the human-readable part
