"""Progress output: a tqdm bar on a terminal, plain lines (no carriage returns) elsewhere;
the config check before a resume."""

import io
import json

import ml_collections as mlc
import numpy as np
import pytest
import tqdm

from dkd_jax.core import metrics_log


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_in_a_file_is_one_line_every_n_steps():
  out = io.StringIO()
  bar = metrics_log.progress(0, 25, every=10, seconds=1e9, file=out)
  assert isinstance(bar, metrics_log.LineProgress)
  for step in range(25):
    bar.set_postfix(loss=f"{1.0 / (step + 1):.4f}")
    bar.update(1)
  bar.close()
  lines = out.getvalue().splitlines()
  assert "\r" not in out.getvalue()
  assert [ln.split("] ")[1].split(" loss")[0] for ln in lines] == [
    "distill step 10/25",
    "distill step 20/25",
    "distill step 25/25",
  ]
  assert "loss=0.1000" in lines[0] and "step/s" in lines[0]


def test_progress_every_few_seconds_and_resumed_start():
  out = io.StringIO()
  bar = metrics_log.progress(7, 10, every=100, seconds=0.0, file=out)
  bar.update(1)
  bar.close()  # nothing new since the last line: no duplicate
  assert out.getvalue().count("\n") == 1 and "step 8/10" in out.getvalue()


def test_progress_on_a_terminal_is_tqdm():
  bar = metrics_log.progress(0, 5, file=_Terminal())
  assert isinstance(bar, tqdm.tqdm)
  bar.close()


def test_a_run_saved_before_a_speed_only_field_resumes(tmp_path):
  """A config saved without train.length_bucket (a speed setting, same losses) resumes;
  a changed field that alters the run is still refused."""
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps({"train": {"steps": 10}}))
  now = mlc.ConfigDict({"train": {"steps": 10, "length_bucket": 64}})
  metrics_log.check_config_unchanged(str(tmp_path), now, allow=False)
  now.train.steps = 20
  with pytest.raises(ValueError, match="train.steps"):
    metrics_log.check_config_unchanged(str(tmp_path), now, allow=False)


def test_a_run_resumes_with_its_layers_applied_another_way(tmp_path):
  """scan_layers and remat change how the layers run, not the params or losses: a run
  saved with scanned layers resumes unrolled; another model width is still refused."""
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  model = {"d_model": 96, "scan_layers": True, "remat": "none"}
  (tmp_path / "config.json").write_text(json.dumps({"student": {"model": model}}))
  now = mlc.ConfigDict({"student": {"model": dict(model, scan_layers=False, remat="full")}})
  metrics_log.check_config_unchanged(str(tmp_path), now, allow=False)
  now.student.model.d_model = 64
  with pytest.raises(ValueError, match="student.model.d_model"):
    metrics_log.check_config_unchanged(str(tmp_path), now, allow=False)


def test_summary_is_strict_json_with_null_for_a_missing_value(tmp_path):
  """A metric without a value (token KL across two vocabularies is NaN) is written as
  null, so strict JSON readers (jq, JavaScript, json.loads with NaN refused) read it."""
  log = metrics_log.Logger(str(tmp_path), mlc.ConfigDict({"seed": 0}))
  log.start(0)
  log.finish({"eval": {"x": {"rkl": float("nan"), "ci95": [np.float32(np.inf), 0.5]}}, "n": 3})
  refuse = lambda c: (_ for _ in ()).throw(ValueError(c))
  s = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
  assert s == {"eval": {"x": {"rkl": None, "ci95": [None, 0.5]}}, "n": 3}
