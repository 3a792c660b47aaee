"""What reverse KL on teacher prefixes trains (issue 20): the step's loss reads the
response positions (EOS included) and nothing after them, and its push on the teacher's
token scales with the student's own probability of it (DESIGN §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dkd_jax.data import packing
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.train import step as train

V, EOS, PAD = 32, 2, 0
STUDENT = model_lib.ModelConfig(
  vocab_size=V, d_model=32, d_ff=64, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16
)
TEACHER = model_lib.ModelConfig(
  vocab_size=V, d_model=48, d_ff=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12
)


def _batch(after_eos):
  """Two rows, responses ending in EOS; `after_eos` fills everything after them."""
  prompts = np.array([[1, 5, 6], [1, 7, 0]], np.int32)
  responses = np.array([[8, 9, 10, EOS, PAD, PAD], [11, EOS, PAD, PAD, PAD, PAD]], np.int32)
  tokens, mask = packing.pack(prompts, np.array([3, 2]), responses, np.array([4, 2]), PAD)
  ends = [3 + 4, 2 + 2]  # first position after each row's EOS
  for b, e in enumerate(ends):
    tokens[b, e:] = after_eos[b, : tokens.shape[1] - e]
  return train.make_batch(tokens, mask, np.zeros(2, bool), 0.0, np.zeros(2, np.uint32))


@pytest.mark.parametrize("kind", ["reverse", "forward"])
def test_loss_and_grads_ignore_everything_after_eos(kind):
  s_gd, s_params = model_lib.init_params(STUDENT, None, 0)
  t_gd, t_params = model_lib.init_params(TEACHER, None, 1)
  static = train.StepStatic(
    s_gd, t_gd, kl_lib.KLSpec(kind=kind, chunk=8), optax.sgd(0.1), None, response_window=6
  )
  rng = np.random.default_rng(0)
  fn = jax.value_and_grad(lambda p, b: train.distill_loss_fn(static, p, t_params, b), has_aux=True)
  out = []
  for fill in (np.full((2, 9), PAD), rng.integers(3, V, (2, 9))):
    b = _batch(fill)
    b["key"] = jax.random.wrap_key_data(jnp.asarray(b["key"]))
    (loss, metrics), grads = fn(s_params, b)
    assert float(metrics["loss_tokens"]) == 4 + 2  # the response tokens, EOS included
    out.append((loss, grads))
  np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), out[0][1], out[1][1])


def _push(q_star, kind, p_star=0.99):
  """-dL/dz_v* for one token: the student has q_star on the teacher's token v*, the rest
  on one wrong token; the teacher p_star on v*."""
  q = np.full(V, 1e-6)
  q[0], q[1] = q_star, 1.0 - q_star - 1e-6 * (V - 2)
  p = np.full(V, (1.0 - p_star) / (V - 1))
  p[0] = p_star
  eye = jnp.eye(V)
  spec = kl_lib.KLSpec(kind=kind)
  loss = lambda z: kl_lib.distill_loss(z, eye, jnp.log(p)[None], eye, jnp.ones(1), spec)[0]
  return float(-jax.grad(loss)(jnp.log(jnp.asarray(q, jnp.float32))[None])[0, 0])


def test_reverse_push_on_the_teachers_token_scales_with_the_students_probability():
  """The mechanism BUILD_NOTES gives for a random student stalling under reverse KL on
  teacher prefixes: forward KL pushes the teacher's token up by p* − q* whatever q*;
  reverse KL by q*·(log p* − log q* + KL(q‖p)), which vanishes with q*."""
  ratios = []
  for q_star in (1e-2, 1e-3, 1e-4):
    fwd, rev = _push(q_star, "forward"), _push(q_star, "reverse")
    assert fwd == pytest.approx(0.99 - q_star, abs=1e-4)
    assert 0 < rev < 20 * q_star  # here about 12.5, 15, 17 x q*
    ratios.append(rev / fwd)
  assert ratios[0] < 0.2 and ratios[2] < 0.002  # 0.13, 0.015, 0.0018
