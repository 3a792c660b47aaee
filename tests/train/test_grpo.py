"""GRPO (DESIGN §9): advantages, rewards, the clipped objective's and the KL penalty's
gradients against hand derivations / the naive oracle, the step on a (2,2,2) mesh with
engine rollouts (G samples from one prefill), config validation, and the CLI from a
distillation run's workdir with kill-and-resume."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core import sharding
from dkd_jax.evals import math_eval
from dkd_jax.generate import engine as engine_lib
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import naive_kl
from dkd_jax.runs import configuration
from dkd_jax.runs import tasks
from dkd_jax.train import grpo
from dkd_jax.train import step as train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CFG = model_lib.ModelConfig(
  vocab_size=64,
  d_model=32,
  d_ff=64,
  n_layers=1,
  n_heads=2,
  n_kv_heads=2,
  head_dim=16,
  max_seq_len=64,
)
REF_CFG = model_lib.ModelConfig(
  vocab_size=64,
  d_model=48,
  d_ff=96,
  n_layers=1,
  n_heads=4,
  n_kv_heads=2,
  head_dim=12,
  max_seq_len=64,
)


def load_config(arg="tiny"):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", "grpo.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


# ------------------------------------------------------------------ advantages and rewards


def test_group_advantages_on_hand_made_groups():
  r = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32)
  a = grpo.group_advantages(r, "mean_std", eps=0.0)
  np.testing.assert_allclose(a[0], [1, -1, -1, 1], atol=1e-6)  # mean .5, std .5
  assert np.all(a[1] == 0) and np.all(a[2] == 0)  # ties: exactly zero
  std = np.sqrt(0.75 * 0.25)
  np.testing.assert_allclose(a[3], np.array([0.75, -0.25, -0.25, -0.25]) / std, rtol=1e-6)
  m = grpo.group_advantages(r, "mean")
  np.testing.assert_allclose(m[3], [0.75, -0.25, -0.25, -0.25])
  assert np.all(m[1] == 0)
  np.testing.assert_allclose(a.sum(axis=1), 0, atol=1e-5)
  with pytest.raises(ValueError, match="rl.advantage"):
    grpo.group_advantages(r, "zscore")


def test_reward_cases_correct_wrong_truncated_unparsable():
  texts = [
    "so 2+3=5\n#### 5",
    "#### 6",
    "#### 5",
    "The answer is banana",
    "",
    r"\boxed{\frac{1}{2}}",
  ]
  golds = ["5", "5", "5", "5", "5", "0.5"]
  cut = [False, False, True, False, False, False]
  r, why = grpo.rewards(texts, golds, cut, math_eval.grade)
  assert r.tolist() == [1, 0, 0, 0, 0, 1]
  assert why == ["correct", "mismatch", grpo.TRUNCATED, "unparseable", "no_answer", "correct"]
  # The embedded task's exact-match grader, through the same function.
  r, why = grpo.rewards(
    ["1+2=3\n#### 3", "#### 4", "#### 3", "no"],
    ["3"] * 4,
    [False, False, True, False],
    tasks._grade_arithmetic,
  )
  assert r.tolist() == [1, 0, 0, 0] and why[2] == grpo.TRUNCATED and why[3] == "no_answer"


def test_unparseable_frac_counts_what_the_graders_return():
  """Issue 22: the loop counted 'unparseable', which the arithmetic/chain grader never
  returns (0.0 in all 840 rows); an answerless response is 'no_answer' there."""
  from dkd_jax.runs import rl_loop

  _, why = grpo.rewards(
    ["1+2=3\n#### 3", "the answer is", "#### 4", "#### 3"],
    ["3"] * 4,
    [False, False, False, True],
    tasks._grade_arithmetic,
  )
  assert why == ["correct", "no_answer", "mismatch", grpo.TRUNCATED]
  assert rl_loop.unparseable_frac(why) == 0.25
  _, why = grpo.rewards(
    ["The answer is banana", "#### 5"], ["5", "5"], [False] * 2, math_eval.grade
  )
  assert rl_loop.unparseable_frac(why) == 0.5  # math-verify's own code counts too
  assert rl_loop.unparseable_frac([]) == 0.0


def test_dynamic_sampling_selects_informative_groups():
  r = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
  assert grpo.informative(r).tolist() == [False, True, False, True, False, True]
  groups, keep = grpo.select_groups(r, 3, "off")
  assert groups.tolist() == [0, 1, 2] and keep.all()
  groups, keep = grpo.select_groups(r, 3, "drop")
  assert groups.tolist() == [0, 1, 2] and keep.tolist() == [False, True, False]
  groups, keep = grpo.select_groups(r, 3, "resample")  # the first 3 informative, in order
  assert groups.tolist() == [1, 3, 5] and keep.all()
  groups, keep = grpo.select_groups(r[:4], 3, "resample")  # 2 informative: topped up, masked
  assert groups.tolist() == [1, 3, 0] and keep.tolist() == [True, True, False]
  assert grpo.group_rows([2, 0], 3).tolist() == [6, 7, 8, 0, 1, 2]
  with pytest.raises(ValueError, match="dynamic_sampling"):
    grpo.select_groups(r, 3, "often")


# ------------------------------------------------------------------ the objective's gradient


def _tiny(seed=0, N=8, D=6, V=11):
  rng = np.random.default_rng(seed)
  h = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(D, V)) * 0.7, jnp.float32)
  y = jnp.asarray(rng.integers(0, V, N), jnp.int32)
  return h, w, y


def test_token_logprobs_match_log_softmax_in_value_and_gradient():
  h, w, y = _tiny()
  ref = lambda h, w: jnp.take_along_axis(jax.nn.log_softmax(h @ w / 0.7), y[:, None], -1)[:, 0]
  ours = lambda h, w: grpo.token_logprobs(h, w, y, temperature=0.7, chunk=3)
  np.testing.assert_allclose(ours(h, w), ref(h, w), rtol=1e-6, atol=1e-6)
  g = jnp.linspace(-1, 1, 8)
  for a, b in zip(
    jax.grad(lambda *x: ours(*x) @ g, (0, 1))(h, w), jax.grad(lambda *x: ref(*x) @ g, (0, 1))(h, w)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_clipped_objective_gradient_matches_hand_derivation():
  """L = −Σ w·min(ρA, clip(ρ)A): dL/dz_n = −w_n A_n ρ_n (onehot − π_n)/τ where the
  unclipped branch is active, 0 where the clip binds."""
  tau, lo, hi = 0.8, 0.2, 0.28
  h, w, y = _tiny()
  logp = grpo.token_logprobs(h, w, y, temperature=tau)
  # Each regime twice: (ratio, A) with the clip binding or not.
  ratio = np.array([1.5, 0.9, 0.5, 1.1, 1.0, 1.25, 0.79, 1.3], np.float32)
  adv = np.array([1.0, 1.0, -1.0, -1.0, 0.5, 2.0, -0.3, 1.0], np.float32)
  old = logp - jnp.log(ratio)
  wts = jnp.asarray(np.random.default_rng(1).uniform(0.1, 1.0, 8), jnp.float32)

  def loss(h, w):
    lp = grpo.token_logprobs(h, w, y, temperature=tau, chunk=4)
    obj, *_ = grpo.clipped_objective(lp, old, adv, lo, hi)
    return -jnp.sum(wts * obj)

  active = ~(((adv > 0) & (ratio > 1 + hi)) | ((adv < 0) & (ratio < 1 - lo)))
  assert active.tolist() == [False, True, False, True, True, True, False, False]
  pi = jax.nn.softmax(h @ w / tau)
  onehot = jax.nn.one_hot(y, w.shape[1])
  coef = -wts * adv * ratio * active
  dz = coef[:, None] * (onehot - pi) / tau
  gh, gw = jax.grad(loss, (0, 1))(h, w)
  np.testing.assert_allclose(gw, h.T @ dz, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gh, dz @ w.T, rtol=1e-4, atol=1e-6)
  _, _, low, high = grpo.clipped_objective(logp, old, adv, lo, hi)
  assert low.tolist() == [False, False, True, False, False, False, True, False]
  assert high.tolist() == [True, False, False, False, False, False, False, True]


# ------------------------------------------------------------------ the loss through a model


@pytest.fixture(scope="module")
def models():
  gd, params = model_lib.init_params(CFG, None, 0)
  ref_gd, ref_params = model_lib.init_params(REF_CFG, None, 1)
  return gd, params, ref_gd, ref_params


def _batch(adv, own_old=False, B=4, T=12, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, 64, (B, T)).astype(np.int32)
  mask = np.zeros((B, T), np.float32)
  for b in range(B):
    start = int(rng.integers(2, 5))
    mask[b, start : start + int(rng.integers(1, T - 1 - start))] = 1
  old = np.where(mask > 0, rng.uniform(-4, -1, (B, T)), 0).astype(np.float32)
  return grpo.make_batch(tokens, mask, old, adv, own_old)


def _static(gd, ref_gd, mesh=None, **spec):
  return grpo.StepStatic(gd, ref_gd, grpo.GRPOSpec(chunk=16, **spec).validate(), None, mesh)


def test_tied_groups_give_zero_gradient(models):
  gd, params, _, _ = models
  batch = _batch(np.zeros(4, np.float32))
  grads = jax.grad(lambda p: grpo.grpo_loss_fn(_static(gd, None), p, None, batch)[0])(params)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


def test_own_old_first_update_has_ratio_exactly_one(models):
  gd, params, _, _ = models
  batch = _batch(np.array([1.0, -1.0, 0.5, -0.5], np.float32), own_old=True)
  loss, (m, logp) = grpo.grpo_loss_fn(_static(gd, None), params, None, batch)
  assert float(m["ratio_mean"]) == 1.0 and float(m["ratio_max_dev"]) == 0.0
  assert float(m["clip_frac_low"]) == 0.0 and float(m["clip_frac_high"]) == 0.0
  # ... and then the gradient is the plain policy gradient −Σ w A ∇log π.
  w = grpo.token_weights(jnp.asarray(batch["loss_mask"]), "token")
  adv = jnp.asarray(batch["adv"])[:, None]

  def plain(p):
    tokens = jnp.asarray(batch["tokens"])
    hid, _ = model_lib.apply(gd, p, tokens)
    lp = grpo.token_logprobs(
      hid.reshape(-1, CFG.d_model), model_lib.head(gd, p), jnp.roll(tokens, -1, 1).reshape(-1)
    ).reshape(tokens.shape)
    return -jnp.sum(w * adv * lp)

  g1 = jax.grad(lambda p: grpo.grpo_loss_fn(_static(gd, None), p, None, batch)[0])(params)
  g2 = jax.grad(plain)(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_dropped_groups_leave_the_normaliser(models, aggregation):
  """DAPO-style dropping: a batch whose tied rows are masked out has the same loss and
  gradient as the batch of its informative rows alone (the mean is over their tokens)."""
  gd, params, _, _ = models
  adv = np.array([0.0, 1.0, 0.0, -1.0], np.float32)
  full = _batch(adv, B=4)
  dropped = dict(full, loss_mask=full["loss_mask"] * (adv != 0)[:, None])
  alone = {k: (v[[1, 3]] if np.ndim(v) and k != "own_old" else v) for k, v in full.items()}
  st = _static(gd, None, aggregation=aggregation)
  f = lambda b: jax.value_and_grad(lambda p: grpo.grpo_loss_fn(st, p, None, b)[0])(params)
  (l1, g1), (l2, g2) = f(dropped), f(alone)
  assert float(l1) == pytest.approx(float(l2), rel=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
  w = grpo.token_weights(jnp.asarray(dropped["loss_mask"]), aggregation)
  assert float(jnp.sum(w)) == pytest.approx(1.0)


def _scripted_loop(mode, rewards_per_draw, P=2, G=2, **rl):
  """An RLLoop without models: `draw` replays scripted rewards (one [P*G] list per draw)."""
  from dkd_jax.runs import rl_loop

  loop = object.__new__(rl_loop.RLLoop)
  c = load_config()
  c.rl.update(dynamic_sampling=mode, max_draws=len(rewards_per_draw), **rl)
  loop.c, loop.P, loop.G, loop.gen_tokens = c, P, G, 0
  loop.metric_names = list(rl_loop.METRIC_NAMES)
  script = iter(rewards_per_draw)

  def draw(step, i):
    r = np.asarray(next(script), np.float32)
    n = len(r)
    res = {
      "tokens": np.tile(np.arange(6), (n, 1)) + 10 * i,
      "loss_mask": np.ones((n, 6), np.float32),
      "entropies": np.ones((n, 6), np.float32),
      "response_len": np.full(n, 5),
      "truncated": np.zeros(n, bool),
    }
    return res, r, ["correct" if x else "no_answer" for x in r]

  loop.draw = draw
  return loop


def test_resampling_draws_until_enough_groups_are_informative():
  # draw 0: groups (0,0) tied, (1,0) informative; draw 1: (1,1) tied, (0,1) informative
  loop = _scripted_loop("resample", [[0, 0, 1, 0], [1, 1, 0, 1], [1, 0, 1, 0]])
  res, adv, stats = loop.group_rollout(0)
  assert stats["draws"] == 2 and stats["informative_groups"] == 2  # stopped after 2
  assert stats["tied_groups"] == 0.5 and stats["unparseable_frac"] == 0.5
  assert res["tokens"][:, 0].tolist() == [0, 0, 10, 10]  # group 1 of draw 0, group 1 of draw 1
  assert res["loss_mask"].all() and np.all(adv != 0)
  # 'drop': one draw, the tied group's rows leave the loss
  loop = _scripted_loop("drop", [[0, 0, 1, 0]])
  res, adv, stats = loop.group_rollout(0)
  assert stats["draws"] == 1 and stats["informative_groups"] == 1
  assert res["loss_mask"][:2].sum() == 0 and res["loss_mask"][2:].all()
  # 'off': the tied group keeps its (zero-advantage) tokens in the normaliser
  loop = _scripted_loop("off", [[0, 0, 1, 0]])
  res, _, stats = loop.group_rollout(0)
  assert res["loss_mask"].all() and stats["informative_groups"] == 1


def test_a_batch_with_no_informative_group_makes_no_optimizer_step():
  loop = _scripted_loop("drop", [[0, 0, 1, 1]])
  res, adv, stats = loop.group_rollout(0)
  assert stats["informative_groups"] == 0 and not res["loss_mask"].any()
  out = loop.update(res, adv)  # never reaches the jitted step (the loop has none here)
  assert out["skipped_update"] == 1.0 and out["grad_norm"] == 0.0
  assert set(out) == set(loop.metric_names) | {"skipped_update"}


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_full_vocab_kl_penalty_gradient_matches_naive_reference(models, aggregation):
  """β·Σ w KL(π_θ‖π_ref) through the fused kernel == the naive [N, V] oracle (τ = 0.8),
  for the teacher-shaped reference (a different width) and zero advantages."""
  gd, params, ref_gd, ref_params = models
  tau, beta = 0.8, 0.3
  batch = _batch(np.zeros(4, np.float32))
  static = _static(gd, ref_gd, kl_coef=beta, temperature=tau, aggregation=aggregation)
  ours = lambda p: grpo.grpo_loss_fn(static, p, ref_params, batch)[0]
  tokens = jnp.asarray(batch["tokens"])
  w = grpo.token_weights(jnp.asarray(batch["loss_mask"]), aggregation).reshape(-1)

  def naive(p):
    hs, _ = model_lib.apply(gd, p, tokens)
    hr, _ = model_lib.apply(ref_gd, ref_params, tokens)
    loss, _ = naive_kl.reference_loss(
      hs.reshape(-1, CFG.d_model),
      model_lib.head(gd, p),
      hr.reshape(-1, REF_CFG.d_model),
      model_lib.head(ref_gd, ref_params),
      w,
      kl_lib.KLSpec(kind="reverse", temperature=tau),
    )
    return beta * loss / tau**2

  np.testing.assert_allclose(ours(params), naive(params), rtol=1e-5)
  assert float(ours(params)) > 0
  for a, b in zip(
    jax.tree.leaves(jax.grad(ours)(params)), jax.tree.leaves(jax.grad(naive)(params))
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_k3_kl_penalty_gradient_matches_hand_derivation(models):
  """d/dθ Σ w (e^Δ − Δ − 1) with Δ = log π_ref − log π_θ is Σ w (1 − e^Δ) ∇log π_θ."""
  gd, params, ref_gd, ref_params = models
  batch = _batch(np.zeros(4, np.float32))
  static = _static(gd, ref_gd, kl_coef=1.0, kl_estimator="k3")
  tokens = jnp.asarray(batch["tokens"])
  y = jnp.roll(tokens, -1, 1).reshape(-1)
  w = grpo.token_weights(jnp.asarray(batch["loss_mask"]), "token").reshape(-1)

  def logp(graphdef, p, cfg):
    hid, _ = model_lib.apply(graphdef, p, tokens)
    logits = hid.reshape(-1, cfg.d_model) @ model_lib.head(graphdef, p)
    return jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]

  delta = logp(ref_gd, ref_params, REF_CFG) - logp(gd, params, CFG)
  hand = jax.grad(
    lambda p: jnp.sum(jax.lax.stop_gradient(w * (1 - jnp.exp(delta))) * logp(gd, p, CFG))
  )(params)
  ours = jax.grad(lambda p: grpo.grpo_loss_fn(static, p, ref_params, batch)[0])(params)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(hand)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # entries up to ~1e-2
  value = grpo.grpo_loss_fn(static, params, ref_params, batch)[1][0]["kl"]
  np.testing.assert_allclose(value, jnp.sum(w * (jnp.exp(delta) - delta - 1)), rtol=1e-5)


# ------------------------------------------------------------------ engine + step on a mesh


def test_group_rollout_one_prefill_per_prompt_and_on_policy_step(monkeypatch):
  """G samples per prompt from one prefill; then the jitted, donated step on a (2,2,2)
  mesh: the rollout's own sampling log-probs give ratio 1 (to fp32 rounding), the
  'recompute' first update gives exactly 1, and shardings are kept."""
  mesh = sharding.make_mesh((2, 2, 2))
  gd, params = model_lib.init_params(CFG, mesh, 0)
  eng = engine_lib.Engine(
    CFG,
    gd,
    mesh=mesh,
    max_concurrent_decodes=8,
    max_prefill_length=8,
    max_decode_length=6,
    prefill_buckets=(8,),
  )
  prompts = [[1, 5, 7], [2, 8, 9, 10], [4], [6, 6]]
  calls = []
  real = eng.prefill_multisampling
  monkeypatch.setattr(
    eng, "prefill_multisampling", lambda **kw: calls.append(kw["num_samples"]) or real(**kw)
  )
  sampler = sampling.Sampler(1.0)
  res = rollout_lib.rollout(eng, params, prompts, sampler=sampler, seed=3, samples_per_prompt=4)
  assert calls == [4, 4, 4, 4]  # one prefill per prompt
  assert res["tokens"].shape[0] == 16
  assert [list(res["prompt_tokens"][i, : res["prompt_len"][i]]) for i in range(0, 16, 4)] == prompts
  responses = {tuple(r) for r in res["response_tokens"][:4]}
  assert len(responses) > 1  # the G samples differ
  greedy = rollout_lib.rollout(eng, params, prompts, samples_per_prompt=2)
  single = rollout_lib.rollout(eng, params, prompts)
  np.testing.assert_array_equal(greedy["response_tokens"][::2], single["response_tokens"])
  np.testing.assert_array_equal(greedy["response_tokens"][1::2], single["response_tokens"])

  opt = train.make_optimizer(load_config().optim, 10)
  shard = train.state_shardings(mesh, opt, CFG)
  adv = grpo.group_advantages(np.array([[1, 0, 0, 1]] * 4, np.float32)).reshape(-1)
  ref = jax.device_put(jax.device_get(params), shard["params"])  # never aliases the state
  for mode in ("rollout", "recompute"):  # 'recompute' also carries the full-vocab KL term
    state = jax.jit(lambda p: train.init_state(opt, p), out_shardings=shard)(params)
    kl = mode == "recompute"
    spec = grpo.GRPOSpec(chunk=16, kl_coef=0.1 if kl else 0.0)
    step = grpo.jit_grpo_step(
      grpo.StepStatic(gd, gd if kl else None, spec, opt, mesh),
      shard,
      shard["params"] if kl else None,
    )
    ref_arg = ref if kl else None
    batch = jax.device_put(
      grpo.make_batch(
        res["tokens"], res["loss_mask"], res["sampling_logprobs"], adv, mode == "recompute"
      ),
      grpo.batch_shardings(mesh),
    )
    new, m, logp = step(state, batch, ref_arg)
    assert float(m["ratio_max_dev"]) < (2e-5 if mode == "rollout" else 1e-30), mode
    assert float(m["logp_vs_rollout"]) < 1e-5 and float(m["grad_norm"]) > 0
    np.testing.assert_allclose(np.asarray(logp), res["sampling_logprobs"], atol=2e-5)
    for a, s in zip(jax.tree.leaves(new), jax.tree.leaves(shard)):
      assert a.sharding.is_equivalent_to(s, a.ndim)
    # Later updates on the batch see ρ != 1 (the first update's lr is 0: warmup from 0).
    later = dict(
      batch, old_logp=logp, own_old=jax.device_put(np.asarray(False), sharding.replicated(mesh))
    )
    new, _, _ = step(new, later, ref_arg)
    _, m3, _ = step(new, later, ref_arg)
    assert float(m3["ratio_max_dev"]) > 0
    if kl:  # KL(π‖π_ref) is 0 while the params equal the reference, > 0 once they move
      assert abs(float(m["kl"])) < 1e-6 and float(m3["kl"]) > 1e-9


# ------------------------------------------------------------------ configs


def test_grpo_config_validates_and_bad_values_name_the_field():
  for arg in ("", "tiny"):
    configuration.validate(load_config(arg))
  bad = [
    ("rl.aggregation", "batch"),
    ("rl.kl_estimator", "k2"),
    ("rl.kl_ref", "self"),
    ("rl.advantage", "rank"),
    ("rl.behavior_logp", "engine"),
    ("rl.group_size", 1),
    ("rl.eps_low", 1.5),
    ("rl.eps_high", -0.1),
    ("rl.kl_coef", -1.0),
    ("rl.updates_per_batch", 0),
    ("rollout.top_p", 0.9),
    ("rollout.temperature", 0.0),
  ]
  for field, value in bad:
    c = load_config()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
      configuration.validate(c)


# ------------------------------------------------------------------ the CLI, kill and resume


def _cli(work, *args):
  cmd = [sys.executable, "-m", "dkd_jax.launch", f"--workdir={work}", *args]
  return cmd, dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _metrics(work):
  rows = {}
  with open(os.path.join(work, "metrics.jsonl")) as f:
    for line in f:
      d = json.loads(line)
      rows[d["step"]] = d
  return [rows[s] for s in sorted(rows)]


GRPO_ARGS = [
  "--config=configs/grpo.py:tiny",
  "--config.train.steps=4",
  "--config.train.ckpt_every=2",
  "--config.rl.eval_every=2",
  "--config.rl.prompts_per_batch=2",
  "--config.rl.group_size=4",
  "--config.rl.kl_coef=0.5",
  "--config.rl.kl_ref=teacher",
  "--config.eval.num_problems=2",
  "--config.mesh=(1,1,1)",
]


def test_grpo_cli_from_a_distillation_run_resumes_and_evaluates(tmp_path):
  run_dir = str(tmp_path / "distilled")
  cmd, env = _cli(
    run_dir,
    "--config=configs/rev_student.py:tiny",
    "--config.train.steps=2",
    "--config.teacher.bootstrap_steps=20",
    "--config.eval.num_problems=2",
    "--config.data.arithmetic.num_train=256",
    "--config.mesh=(1,1,1)",
  )
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  straight = str(tmp_path / "straight")
  cmd, env = _cli(straight, *GRPO_ARGS, f"--config.init.checkpoint={run_dir}")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "grpo summary" in out.stderr
  killed = str(tmp_path / "killed")
  cmd, env = _cli(killed, *GRPO_ARGS, f"--config.init.checkpoint={run_dir}")
  proc = subprocess.Popen(
    cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  ckpt2, deadline = os.path.join(killed, "checkpoints", "4"), time.time() + 300
  # the train state's step counts optimizer steps: RL step 2 x 2 updates = 4
  while not os.path.isdir(ckpt2) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert os.path.isdir(ckpt2)
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  a, b = _metrics(straight), _metrics(killed)
  assert [r["step"] for r in b] == [1, 2, 3, 4]
  for ra, rb in zip(a, b):
    for k in ra:
      if not k.endswith("_time"):
        assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
  # rewards are 0 for this untrained student; the teacher-KL penalty moves the policy
  assert a[-1]["kl"] > 0 and a[-1]["grad_norm"] > 0 and a[-1]["kl"] < a[0]["kl"]
  summary = json.load(open(os.path.join(straight, "summary.json")))
  assert sorted(map(int, summary["curve"])) == [0, 2, 4]
  assert summary == json.load(open(os.path.join(killed, "summary.json")))
  per = summary["eval"]["arithmetic"]["per_problem"]
  assert len(per["correct"]) == 2 and len(per["length"]) == 2
  # the GRPO workdir is a run directory: the evaluate CLI reads its config and checkpoint
  cmd = [sys.executable, "-m", "dkd_jax.evaluate", f"--workdir={straight}"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (
    json.load(open(os.path.join(straight, "eval.json")))["arithmetic"]["avg_at_k"]
    == summary["eval"]["arithmetic"]["avg_at_k"]
  )


def test_a_run_directory_owns_the_evaluation_and_rl_eval_fields_only_resize_it(tmp_path):
  """GRPO from a run directory is scored on that run's held-out set (task and k), not the
  GRPO file's defaults; rl.eval_problems / rl.eval_k shrink the evaluation only."""
  from dkd_jax.runs import rl_loop as rl_run

  run_c = load_config()
  run_c.data.task, run_c.eval.datasets, run_c.eval.k = "chain", ("chain",), 8
  run_c.eval.num_problems = 1000
  run_c.eval.at_steps = (0, 100, 200)  # the distillation curve's points, not GRPO's
  os.makedirs(tmp_path / "checkpoints")
  with open(tmp_path / "config.json", "w") as f:
    json.dump(run_c.to_dict(), f)
  c = load_config()
  c.init.checkpoint = str(tmp_path)
  resolved = rl_run.resolve_config(c)
  assert resolved.data.task == "chain" and tuple(resolved.eval.datasets) == ("chain",)
  assert resolved.eval.k == 8 and resolved.eval.num_problems == 1000
  assert tuple(resolved.eval.at_steps) == ()
  resolved.train.steps = 100
  configuration.validate(resolved)  # a 100-step GRPO run from a 300-step study run
  resolved.rl.eval_problems, resolved.rl.eval_k = 300, 4
  e = rl_run.eval_config(resolved)
  assert (e.eval.num_problems, e.eval.k) == (300, 4)
  assert resolved.eval.num_problems == 1000  # the train/held-out split is left alone


def test_grpo_step_keeps_the_batch_sharded_under_fsdp():
  """The GRPO step enters `sharding.mesh_context` as the distillation step does, so every
  block's input is pinned batch-sharded over ('data', 'fsdp') (`constrain_batch`): without
  it the TPU compiler kept FSDP weights sharded and replicated the batch over 'fsdp'
  (BUILD_NOTES, issue 25). Checked on the lowered program: one constraint per scanned
  block, in the policy's and the KL reference's forwards."""
  mesh = sharding.make_mesh((1, 4, 1), jax.devices()[:4])
  opt = train.make_optimizer(load_config().optim, 10)
  state = train.abstract_state(opt, mesh, CFG)
  state_shard = jax.tree.map(lambda x: x.sharding, state)
  spec = grpo.GRPOSpec(chunk=16, kl_coef=0.1)
  gd, _ = model_lib.abstract(CFG)
  step = grpo.jit_grpo_step(
    grpo.StepStatic(gd, gd, spec, opt, mesh),
    state_shard,
    state_shard["params"],
  )
  B, T = 8, 12
  shard = grpo.batch_shardings(mesh)
  batch = {
    k: jax.ShapeDtypeStruct(s, d, sharding=shard[k])
    for k, s, d in (
      ("tokens", (B, T), jnp.int32),
      ("loss_mask", (B, T), jnp.float32),
      ("old_logp", (B, T), jnp.float32),
      ("adv", (B,), jnp.float32),
      ("own_old", (), jnp.bool_),
    )
  }
  text = step.lower(state, batch, state["params"]).as_text()
  pinned = [
    line
    for line in text.splitlines()
    if "sharding_constraint" in line and '{"data", "fsdp"}' in line.replace("'", '"')
  ]
  assert len(pinned) >= 2, [line for line in text.splitlines() if "sharding_constraint" in line]
