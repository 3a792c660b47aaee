"""The teacher bootstrap resumes an interrupted SFT bit for bit, and cutting each batch to
its longest sequence leaves the loss and gradient unchanged."""

import jax
import numpy as np
import pytest

from configs import common
from dkd_jax.core import sharding
from dkd_jax.data import packing
from dkd_jax.models import decoder as model_lib
from dkd_jax.runs import bootstrap
from dkd_jax.runs import configuration


def _batches(n, seed=0, stop_after=None):
  rng = np.random.default_rng(seed)
  for i in range(n):
    if stop_after is not None and i == stop_after:
      raise KeyboardInterrupt("killed")
    p_len = rng.integers(3, 8, 4)
    r_len = rng.integers(5, 40, 4)
    yield {
      "prompt_tokens": rng.integers(3, 30, (4, 8)).astype(np.int32),
      "prompt_len": p_len.astype(np.int32),
      "response_tokens": rng.integers(3, 30, (4, 64)).astype(np.int32),
      "response_len": r_len.astype(np.int32),
    }


@pytest.fixture(scope="module")
def setup():
  cfg = configuration.model_config(common.tiny_model(d_model=32, n_layers=1), "m")
  return cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])


def _train(setup, batches, progress=None):
  cfg, mesh = setup
  return bootstrap.train_teacher(
    cfg,
    batches,
    steps=6,
    lr=3e-3,
    mesh=mesh,
    seed=0,
    pad_id=0,
    log=lambda *_: None,
    progress=progress,
    save_every=2,
  )[1]


def test_an_interrupted_bootstrap_resumes_to_the_uninterrupted_params(setup, tmp_path):
  want = _train(setup, _batches(6))
  with pytest.raises(KeyboardInterrupt):  # killed during step 5, after the save at 4
    _train(setup, _batches(6, stop_after=4), progress=tmp_path / "p")
  assert (tmp_path / "p" / "state_4").exists() and not (tmp_path / "p" / "state_2").exists()
  got = _train(setup, _batches(6), progress=tmp_path / "p")
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cutting_trailing_padding_leaves_loss_and_gradient_unchanged(setup):
  cfg, mesh = setup
  graphdef, params = model_lib.init_params(cfg, mesh, 0)
  b = next(_batches(1, seed=3))
  tokens, mask = packing.pack(
    b["prompt_tokens"], b["prompt_len"], b["response_tokens"], b["response_len"], 0
  )
  cut = -(-int(np.max(b["prompt_len"] + b["response_len"])) // 32) * 32
  assert cut < tokens.shape[1]
  grad = jax.value_and_grad(lambda p, t, m: bootstrap._ce_loss(graphdef, p, t, m))
  full = grad(params, tokens, mask)
  short = grad(params, tokens[:, :cut], mask[:, :cut])
  np.testing.assert_allclose(float(full[0]), float(short[0]), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(full[1]), jax.tree.leaves(short[1]), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
