"""A run hands its student off: launch -> export (HF and GGUF) -> transformers gives the
run's logits; the run's log is plain lines; readers of a run dir (export, evaluate)
write nothing into it but their own outputs."""

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from dkd_jax import export as export_lib
from dkd_jax.core import checkpointing
from dkd_jax.data import arithmetic
from dkd_jax.models import decoder as M
from dkd_jax.runs import tasks
from dkd_jax.runs import workdir as run_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LAUNCH = [
  "--config=configs/rev_student.py:tiny",
  "--config.train.steps=4",
  "--config.train.ckpt_every=2",
  "--config.train.log_every=2",
  "--config.teacher.bootstrap_steps=30",
  "--config.eval.num_problems=2",
  "--config.data.arithmetic.num_train=512",
  "--config.export.at_end=True",
]
PROMPT = "12+3*4=\n"


def _env():
  # Commands run from a folder without configs/: everything comes from RUN_DIR.
  return dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )


def _cli(module, *args, cwd):
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=cwd,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )


def listing(root):
  """relative path -> (size, mtime) of everything under root."""
  out = {}
  for d, dirs, files in os.walk(root):
    for n in dirs + files:
      p = os.path.join(d, n)
      st = os.stat(p)
      out[os.path.relpath(p, root)] = (st.st_size if n in files else 0, st.st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(run dir, its log) of the README's tiny launch with stdout+stderr in a file."""
  root = tmp_path_factory.mktemp("handoff")
  work, log = str(root / "run"), str(root / "log.txt")
  with open(log, "w") as f:
    done = subprocess.run(
      [sys.executable, "-m", "dkd_jax.launch", f"--workdir={work}", *LAUNCH],
      cwd=ROOT,
      env=_env(),
      stdout=f,
      stderr=subprocess.STDOUT,
      timeout=900,
    )
  text = open(log).read()
  assert done.returncode == 0, text[-3000:]
  return work, text


def forward(work, tokens):
  """The run's own forward (the evaluation's params) on `tokens`."""
  c = run_dir.load_config(work)
  cfg, params, _ = export_lib.student_params(c, work)
  return np.asarray(M.logits(M.abstract(cfg)[0], params, jnp.asarray(tokens))[0])


def prompt():
  tok = arithmetic.CharTokenizer()
  return np.asarray([[tok.bos_id] + tok.encode(PROMPT)])


def test_launch_log_is_readable_lines(run):
  _, text = run
  assert "\r" not in text, [ln for ln in text.split("\n") if "\r" in ln][:3]
  assert "distill step 2/4" in text and "distill step 4/4" in text
  assert "Downloading" not in text


def test_export_hf_matches_the_run(run, tmp_path):
  work, _ = run
  before = listing(work)
  out = _cli("dkd_jax.export", f"--workdir={work}", f"--out={tmp_path / 'hf'}", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert listing(work) == before
  model = transformers.AutoModelForCausalLM.from_pretrained(
    str(tmp_path / "hf"), dtype=torch.float32
  ).eval()
  tokens = prompt()
  with torch.no_grad():
    ref = model(torch.tensor(tokens)).logits.numpy()
  diff = float(np.abs(forward(work, tokens) - ref).max())
  print(f"tiny run, HF export: max |logit diff| {diff:.2e}")
  assert diff < 1e-4
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  assert tok(PROMPT).input_ids == tokens[0].tolist()
  # The run's own export at its end (export.at_end) is the same model.
  at_end = os.path.join(work, "export", "hf", "model.safetensors")
  assert open(at_end, "rb").read() == open(tmp_path / "hf" / "model.safetensors", "rb").read()


def test_export_gguf_matches_the_run(run, tmp_path):
  pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
  work, _ = run
  before = listing(work)
  out = _cli(
    "dkd_jax.export", f"--workdir={work}", f"--out={tmp_path}", "--format=gguf", cwd=tmp_path
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert listing(work) == before
  model = transformers.AutoModelForCausalLM.from_pretrained(
    str(tmp_path), gguf_file="model.gguf", dtype=torch.float32
  ).eval()
  tokens = prompt()
  with torch.no_grad():
    ref = model(torch.tensor(tokens)).logits.numpy()
  diff = float(np.abs(forward(work, tokens) - ref).max())
  print(f"tiny run, GGUF export: max |logit diff| {diff:.2e}")
  assert diff < 1e-4


def test_export_reads_a_remote_run_directory(run, tmp_path, mock_gcs, monkeypatch):
  """export reads the run directory through runs/workdir on epath, so a `gs://` run works
  (served by the epath mock). Orbax reads the arrays through tensorstore's own GCS driver,
  which the mock cannot serve: that one call is pointed at the same files locally."""
  bucket, root = mock_gcs
  shutil.copytree(run[0], root / "run", symlinks=True)
  restore, asked = checkpointing.restore_params, []

  def restore_locally(workdir, like, step=None):
    asked.append(str(workdir))
    return restore(root / "run", like, step)

  monkeypatch.setattr(checkpointing, "restore_params", restore_locally)
  quiet = lambda _: None
  export_lib.export_run(f"{bucket}/run", str(tmp_path / "remote"), log=quiet)
  assert asked == [f"{bucket}/run"]
  export_lib.export_run(str(root / "run"), str(tmp_path / "local"), log=quiet)
  weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("remote", "local")]
  assert weights[0] == weights[1]


def test_export_of_a_missing_step_lists_the_steps(run, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"step 3 .* steps \[2, 4\]"):
    export_lib.export_run(run[0], str(tmp_path / "x"), step=3)


def test_evaluate_writes_only_its_eval_files(run):
  work, _ = run
  before = listing(work)
  out = _cli("dkd_jax.evaluate", f"--workdir={work}", cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  after = listing(work)
  changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
  assert changed <= {"eval.json", "eval.md"}, sorted(changed)


def test_evaluate_without_teacher_cache_names_the_command(run, tmp_path):
  work = str(tmp_path / "run")
  shutil.copytree(run[0], work, ignore=shutil.ignore_patterns("teacher"))
  before = listing(work)
  out = _cli("dkd_jax.evaluate", f"--workdir={work}", cwd=ROOT)
  assert out.returncode != 0
  assert "python -m dkd_jax.launch" in out.stderr and "teacher" in out.stderr
  assert listing(work) == before


def test_read_only_task_prepares_local_files_elsewhere(tmp_path, shared_data):
  src = tmp_path / "gsm8k_small.jsonl"
  with open(os.path.join(shared_data, "gsm8k_train.jsonl")) as f:
    src.write_text("".join(next(f) for _ in range(12)))
  c = mlc.ConfigDict(
    {"data": {"task": "gsm8k", "path": str(src), "reader": "tfds"}, "eval": {"num_problems": 2}}
  )
  work = tmp_path / "run"
  work.mkdir()
  train, held_out = tasks.records_for(c, str(work), read_only=True)
  assert len(train) + len(held_out) == 12 and not os.listdir(work)
  tasks.records_for(c, str(work))  # a run prepares into WORKDIR/tfds
  assert os.listdir(work) == ["tfds"]
