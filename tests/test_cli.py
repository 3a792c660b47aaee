"""The command-line entry points: each prints its flags on --help and refuses bad usage."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CLIS = {
  "launch": ("--config", "--workdir"),
  "evaluate": ("--workdir", "--config"),
  "report": ("--out",),
  "export": ("--workdir", "--out", "--format", "--step"),
  "rl_report": ("--out",),
}


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
  )


@pytest.mark.parametrize("name", sorted(CLIS))
def test_help_prints_flags(name):
  out = _run(f"dkd_jax.{name}", "--help")
  text = out.stdout + out.stderr
  assert "Traceback" not in text, text[-3000:]
  for flag in CLIS[name]:
    assert flag in text, (name, flag, text[-2000:])


def test_report_without_runs_is_a_usage_error():
  out = _run("dkd_jax.report")
  assert out.returncode != 0 and "run directories" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_without_run_dir_is_a_usage_error():
  out = _run("dkd_jax.evaluate")
  assert out.returncode != 0 and "--workdir" in out.stderr and "Traceback" not in out.stderr


def test_unknown_preset_lists_presets():
  out = _run("dkd_jax.launch", "--config=configs/rev_student.py:tinny", "--workdir=/tmp/x")
  assert out.returncode != 0
  assert "tinny" in out.stderr and "'tiny'" in out.stderr


def test_export_without_run_dir_is_a_usage_error():
  out = _run("dkd_jax.export", "--out=/tmp/x")
  assert out.returncode != 0 and "--workdir" in out.stderr and "Traceback" not in out.stderr
