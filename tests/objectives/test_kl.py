"""The chunked, fused, vocab-sharded KL kernel against a materialised reference.

Runs on the emulated 8-device CPU mesh of conftest.py. Shapes are tiny (N=37 tokens,
D=16, V=64/128) so the whole file stays well inside a minute on 2 cores; compiled
functions are cached per (spec, mesh) and shared between checks.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core.sharding import make_mesh
from dkd_jax.objectives import kl
from dkd_jax.objectives import naive_kl
from dkd_jax.objectives import topk_loss

# fp32 tolerances (the issue's). bf16 inputs: the logit cotangent is rounded to bf16
# before the two gradient matmuls and d(hidden)/d(head) come back in bf16 (8 mantissa
# bits), so gradients are held to ~2^-6 relative; the value/metrics stay fp32-accumulated.
F32_TOL = dict(rtol=1e-5, atol=1e-6)
BF16_GRAD_TOL = dict(rtol=2e-2, atol=2e-3)
BF16_VALUE_TOL = dict(rtol=1e-4, atol=1e-5)


@functools.cache
def _inputs(n=37, d=16, e=12, v=64, dtype="float32", seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  dt = jnp.dtype(dtype)
  hs = jax.random.normal(ks[0], (n, d)).astype(dt)
  Ws = (0.5 * jax.random.normal(ks[1], (d, v))).astype(dt)
  ht = jax.random.normal(ks[2], (n, e)).astype(dt)
  Wt = (0.5 * jax.random.normal(ks[3], (e, v))).astype(dt)
  mask = (jax.random.uniform(ks[4], (n,)) > 0.3).astype(jnp.float32)
  mask = mask.at[-5:].set(0.0)  # trailing padding, as in right-padded batches
  tok = jax.random.randint(ks[5], (n,), 0, v)
  return hs, Ws, ht, Wt, mask, tok


@functools.cache
def _value_and_grad(spec, mesh_shape=None, reference=False, with_tokens=True):
  """jit(value_and_grad) wrt (hs, Ws, ht, Wt, alpha); cached so checks share compiles."""
  mesh = None if mesh_shape is None else make_mesh(mesh_shape)

  def f(hs, Ws, ht, Wt, alpha, mask, tok):
    tok = tok if with_tokens else None
    if reference:
      return naive_kl.reference_loss(hs, Ws, ht, Wt, mask, spec, tokens_N=tok, alpha=alpha)
    return kl.distill_loss(hs, Ws, ht, Wt, mask, spec, tokens_N=tok, alpha=alpha, mesh=mesh)

  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True))


def _compare(spec, mesh_shape, data, alpha=0.3, value_tol=F32_TOL, grad_tol=F32_TOL):
  hs, Ws, ht, Wt, mask, tok = data
  args = (hs, Ws, ht, Wt, jnp.float32(alpha), mask, tok)
  (loss, met), grads = _value_and_grad(spec, mesh_shape)(*args)
  up = [x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in args]
  (ref_loss, ref_met), ref_grads = _value_and_grad(spec, reference=True)(*up)
  np.testing.assert_allclose(loss, ref_loss, **value_tol)
  assert sorted(met) == sorted(ref_met) == sorted(kl.METRICS + ("logp_s",))
  for k in ref_met:
    np.testing.assert_allclose(met[k], ref_met[k], err_msg=k, **value_tol)
  names = ("hidden_s", "head_s", "hidden_t", "head_t", "alpha")
  for arg, name, g, r in zip(args, names, grads, ref_grads):
    assert g.dtype == arg.dtype, name  # cotangents come back in the input's dtype
    np.testing.assert_allclose(
      np.asarray(g, np.float32), np.asarray(r, np.float32), err_msg=name, **grad_tol
    )
  assert not np.any(np.asarray(grads[2], np.float32)), "teacher hidden got a gradient"
  assert not np.any(np.asarray(grads[3], np.float32)), "teacher head got a gradient"


S = kl.KLSpec
# Every kind at tau 1 and 2, spread over tensor-shard counts 1/2/4/8, chunk sizes that
# do not divide the (local) token count, top-k and the sampled-token estimator.
CASES = [
  (S("forward", temperature=1.0, chunk=8), (1, 1, 1)),
  (S("forward", temperature=2.0, chunk=5), (1, 1, 8)),
  (S("reverse", temperature=1.0, chunk=16), (1, 1, 2)),
  (S("reverse", temperature=2.0, chunk=5), (1, 1, 4)),
  (S("mixed", temperature=1.0, chunk=5), (1, 1, 4)),
  (S("mixed", temperature=2.0, chunk=256), (1, 1, 2)),
  (S("jsd", beta=0.3, temperature=1.0, chunk=8), (1, 1, 8)),
  (S("jsd", beta=0.7, temperature=2.0, chunk=5), (1, 1, 4)),
  (S("mixed", temperature=2.0, chunk=5, teacher_top_k=5), (1, 1, 4)),
  (S("jsd", beta=0.5, temperature=2.0, chunk=8, teacher_top_k=20), (1, 1, 8)),
  (S("reverse", estimator="sampled_token", temperature=2.0, chunk=8), (1, 1, 2)),
  (S("mixed", estimator="sampled_token", chunk=5, teacher_top_k=5), (1, 1, 8)),
]


@pytest.mark.parametrize(
  "spec,mesh_shape",
  CASES,
  ids=lambda x: (
    str(x)
    if isinstance(x, tuple)
    else f"{x.kind}-t{x.temperature}-{x.estimator}-k{x.teacher_top_k}-c{x.chunk}"
  ),
)
def test_matches_reference_fp32(spec, mesh_shape):
  _compare(spec, mesh_shape, _inputs(v=128 if mesh_shape[2] == 8 else 64))


def test_matches_reference_batch_and_vocab_sharded():
  # (2,2,2): tokens over data x fsdp (36 / 4 = 9 local, chunk 5 leaves a ragged chunk).
  data = _inputs(n=36)
  _compare(S("mixed", temperature=2.0, chunk=5, teacher_top_k=5), (2, 2, 2), data)
  _compare(S("reverse", estimator="sampled_token", chunk=4), (2, 2, 2), data)


def test_matches_reference_bf16():
  _compare(
    S("mixed", temperature=2.0, chunk=8),
    (1, 1, 4),
    _inputs(dtype="bfloat16"),
    value_tol=BF16_VALUE_TOL,
    grad_tol=BF16_GRAD_TOL,
  )


def test_value_without_grad_and_no_tokens():
  """The undifferentiated (primal) path and the tokens-free call agree with the fused one."""
  hs, Ws, ht, Wt, mask, _ = _inputs()
  spec = S("mixed", temperature=2.0, chunk=8)
  loss, met = jax.jit(lambda *a: kl.distill_loss(*a, spec, mesh=make_mesh((1, 1, 4))))(
    hs, Ws, ht, Wt, mask
  )
  assert "logp_s" not in met
  ref, _ = naive_kl.reference_loss(hs, Ws, ht, Wt, mask, spec)
  np.testing.assert_allclose(loss, ref, **F32_TOL)


# --- DESIGN §3 gradient identities, on logits: an identity head makes hidden == logits.


def _logit_grad(spec, z_NxV, t_NxV, tokens=None):
  """Per-token d KL/dz from the kernel: d loss/d hidden rescaled by N/τ² (mask = 1)."""
  n, v = z_NxV.shape
  eye = jnp.eye(v)
  f = lambda z: kl.distill_loss(z, eye, t_NxV, eye, jnp.ones(n), spec, tokens_N=tokens)[0]
  return jax.jit(jax.grad(f))(z_NxV) * n / spec.temperature**2


def _logits(n=6, v=16, seed=1):
  kz, kt = jax.random.split(jax.random.key(seed))
  return 2 * jax.random.normal(kz, (n, v)), 2 * jax.random.normal(kt, (n, v))


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_forward_grad_is_soft_target_cross_entropy(tau):
  z, t = _logits()
  q, p = jax.nn.softmax(z / tau), jax.nn.softmax(t / tau)
  ce = lambda z: jnp.sum(-p * jax.nn.log_softmax(z / tau))  # soft-target CE
  g = _logit_grad(S("forward", temperature=tau), z, t)
  np.testing.assert_allclose(g, (q - p) / tau, **F32_TOL)
  np.testing.assert_allclose(g, jax.grad(ce)(z), **F32_TOL)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_reverse_grad_closed_form(tau):
  z, t = _logits()
  lq, lp = jax.nn.log_softmax(z / tau), jax.nn.log_softmax(t / tau)
  rkl = jnp.sum(jnp.exp(lq) * (lq - lp), -1, keepdims=True)
  g = _logit_grad(S("reverse", temperature=tau), z, t)
  np.testing.assert_allclose(g, jnp.exp(lq) * (lq - lp - rkl) / tau, **F32_TOL)


def test_mixed_is_weighted_sum():
  z, t = _logits()
  a = 0.3
  g = _logit_grad(S("mixed", alpha=a, temperature=2.0), z, t)
  gf = _logit_grad(S("forward", temperature=2.0), z, t)
  gr = _logit_grad(S("reverse", temperature=2.0), z, t)
  np.testing.assert_allclose(g, a * gf + (1 - a) * gr, **F32_TOL)


def test_sampled_token_mean_converges_to_reverse_grad():
  """M = 8192 draws y ~ q per position (4 positions, V = 16), all in one call. Each
  element of the sample mean must lie within 5 standard errors (estimated from the same
  draws) of the exact reverse-KL gradient; 64 elements at 5 sigma: false alarms ~1e-5."""
  tau, m = 2.0, 8192
  z, t = _logits(n=4)
  n, v = z.shape
  y = jax.random.categorical(jax.random.key(7), z / tau, shape=(m, n)).reshape(-1)
  z_rep, t_rep = jnp.tile(z, (m, 1)), jnp.tile(t, (m, 1))
  spec = S("reverse", estimator="sampled_token", temperature=tau)
  per_sample = _logit_grad(spec, z_rep, t_rep, tokens=y).reshape(m, n, v)
  mean, se = per_sample.mean(0), per_sample.std(0) / np.sqrt(m)
  exact = _logit_grad(S("reverse", temperature=tau), z, t)
  assert float(jnp.max(jnp.abs(mean - exact) / (se + 1e-7))) < 5.0


def test_jsd_beta_limits():
  """JSD/β → forward KL as β → 0 and JSD/(1−β) → reverse KL as β → 1, with an O(β)
  error (checked: 10× smaller β, ≥5× smaller error); β = 0 and β = 1 are defined as
  exactly forward and reverse. The O(β) term grows with max p/q, so the logits here are
  mild (std 0.5); with std-2 logits β must be far smaller than min q/p to converge."""
  z, t = _logits()
  z, t = z / 4, t / 4
  gf = _logit_grad(S("forward"), z, t)
  gr = _logit_grad(S("reverse"), z, t)
  err = {}
  for eps in (1e-2, 1e-3):
    err[eps] = (
      float(jnp.max(jnp.abs(_logit_grad(S("jsd", beta=eps), z, t) / eps - gf))),
      float(jnp.max(jnp.abs(_logit_grad(S("jsd", beta=1 - eps), z, t) / eps - gr))),
    )
  assert max(err[1e-3]) < 2e-3, err
  assert err[1e-3][0] < err[1e-2][0] / 5 and err[1e-3][1] < err[1e-2][1] / 5, err
  np.testing.assert_allclose(_logit_grad(S("jsd", beta=0.0), z, t), gf, **F32_TOL)
  np.testing.assert_allclose(_logit_grad(S("jsd", beta=1.0), z, t), gr, **F32_TOL)


def test_near_identical_models_fp32_error_vs_fp64():
  """Teacher ≈ student (KL ~1e-5): f32 cancellation makes even the naive f32 gradient
  inexact; against a float64 closed form the kernel may be at most 3× naive f32's error."""
  z, _ = _logits()
  t = z + 1e-2 * jax.random.normal(jax.random.key(3), z.shape)
  z64, t64 = np.asarray(z, np.float64), np.asarray(t, np.float64)
  lq = z64 - np.log(np.exp(z64).sum(-1, keepdims=True))
  lp = t64 - np.log(np.exp(t64).sum(-1, keepdims=True))
  q, p = np.exp(lq), np.exp(lp)
  exact = {"forward": q - p, "reverse": q * (lq - lp - (q * (lq - lp)).sum(-1, keepdims=True))}
  eye, ones = jnp.eye(z.shape[1]), jnp.ones(z.shape[0])
  for kind, g64 in exact.items():
    spec = S(kind)
    naive = jax.grad(lambda z, s=spec: naive_kl.reference_loss(z, eye, t, eye, ones, s)[0])(z)
    err_naive = np.max(np.abs(np.asarray(naive, np.float64) * z.shape[0] - g64))
    err_ours = np.max(np.abs(np.asarray(_logit_grad(S(kind), z, t), np.float64) - g64))
    assert err_ours <= 3 * err_naive + 1e-9, (kind, err_ours, err_naive)


def test_working_memory_is_per_chunk():
  """Compiled temp memory of loss+grad stays far below one [N, V] fp32 logits array."""
  n, d, v = 2048, 16, 2048
  x = jax.ShapeDtypeStruct
  spec = S("mixed", chunk=128)
  f = lambda hs, Ws, ht, Wt, m: kl.distill_loss(hs, Ws, ht, Wt, m, spec)[0]
  compiled = (
    jax.jit(jax.grad(f, argnums=(0, 1)))
    .lower(
      x((n, d), jnp.float32),
      x((d, v), jnp.float32),
      x((n, d), jnp.float32),
      x((d, v), jnp.float32),
      x((n,), jnp.float32),
    )
    .compile()
  )
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < n * v * 4 / 2, temp


# --- bad input: ValueError naming the argument, raised before anything is traced.


def _call(spec=None, v_t=64, tokens=None, n=8, mesh=None, alpha=None):
  spec = S() if spec is None else spec
  a = lambda *s: np.zeros(s, np.float32)
  return kl.distill_loss(
    a(n, 4), a(4, 64), a(n, 4), a(4, v_t), a(n), spec, tokens_N=tokens, mesh=mesh, alpha=alpha
  )


@pytest.mark.parametrize(
  "kwargs,needle",
  [
    (dict(v_t=32), "head_t_ExV"),
    (dict(spec=S(alpha=1.5)), "alpha"),
    (dict(spec=S(beta=-0.1)), "beta"),
    (dict(alpha=2.0), "alpha"),
    (dict(spec=S(temperature=0.0)), "temperature"),
    (dict(spec=S(chunk=0)), "chunk"),
    (dict(spec=S(kind="kl")), "kind"),
    (dict(spec=S(estimator="mc")), "estimator"),
    (dict(spec=S(teacher_top_k=-1)), "teacher_top_k"),
    (dict(spec=S("reverse", estimator="sampled_token")), "tokens_N"),
    (dict(spec=S("forward", estimator="sampled_token"), tokens=np.zeros(8, np.int32)), "estimator"),
    (dict(n=6, mesh=(2, 2, 2)), "'data', 'fsdp'"),
  ],
)
def test_bad_input_raises(kwargs, needle):
  if "mesh" in kwargs:
    kwargs["mesh"] = make_mesh(kwargs["mesh"])
  with pytest.raises(ValueError, match=needle):
    _call(**kwargs)


@pytest.mark.parametrize(
  "kind,k,tau", [("forward", 5, 1.0), ("reverse", 5, 1.0), ("mixed", 5, 2.0), ("forward", 40, 1.0)]
)
def test_cached_topk_matches_in_step_top_k(kind, k, tau):
  """Top-k (ids, log-probs) taken from the teacher's logits once and cached give the same
  loss, metrics and student gradients as the kernel's in-step teacher_top_k path."""
  rng = np.random.default_rng(0)
  N, D, E, V = 37, 8, 12, 40
  hs, ws = rng.normal(size=(N, D)), rng.normal(size=(D, V)) / 3
  ht, wt = rng.normal(size=(N, E)), rng.normal(size=(E, V)) / 3
  hs, ws, ht, wt = (jnp.asarray(x, jnp.float32) for x in (hs, ws, ht, wt))
  mask = jnp.asarray(rng.random(N) < 0.8, jnp.float32)
  spec = kl.KLSpec(kind=kind, alpha=0.3, temperature=tau, teacher_top_k=k, chunk=8)
  logp_t = jax.nn.log_softmax(ht @ wt, axis=-1)
  logp_k, ids_k = jax.lax.top_k(logp_t, k)

  def ours(hs, ws):
    return topk_loss.cached_topk_loss(hs, ws, ids_k, logp_k, mask, spec)

  def in_step(hs, ws):
    return kl.distill_loss(hs, ws, ht, wt, mask, spec)

  (la, ma), ga = jax.value_and_grad(ours, argnums=(0, 1), has_aux=True)(hs, ws)
  (lb, mb), gb = jax.value_and_grad(in_step, argnums=(0, 1), has_aux=True)(hs, ws)
  np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)
  # The kernel's metrics are full-vocab KLs, which the cache cannot give below k = V;
  # the cached metrics are over the cached set.
  for key in ("fkl", "rkl", "ent_s") if k == V else ("ent_s",):
    np.testing.assert_allclose(ma[key] * mask, mb[key] * mask, rtol=1e-5, atol=1e-5, err_msg=key)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# --- the kernel's own inputs (issue 23): each refused clearly, or harmless.


def _small(n=16, v=64):
  hs, Ws, ht, Wt, mask, tok = _inputs(n=n, v=v)
  return np.asarray(hs), np.asarray(Ws), np.asarray(ht), np.asarray(Wt), np.asarray(mask), tok


@pytest.mark.parametrize("bad", [-1, 64, 10**6])
def test_token_ids_outside_the_vocab_are_refused(bad):
  hs, Ws, ht, Wt, mask, tok = _small()
  tok = np.asarray(tok).copy()
  tok[3] = bad
  spec = S("reverse", estimator="sampled_token")
  with pytest.raises(ValueError, match=r"\[0, V=64\).*tokens\[3\]"):
    kl.distill_loss(hs, Ws, ht, Wt, mask, spec, tokens_N=tok)
  # inside jit (no host check possible) the loss is NaN, never a silent 0
  f = jax.jit(lambda t: kl.distill_loss(hs, Ws, ht, Wt, mask, spec, tokens_N=t)[0])
  assert np.isnan(f(tok)) and np.isfinite(f(np.asarray(_small()[5])))


@pytest.mark.parametrize("spec", [S("forward"), S("reverse"), S("mixed", temperature=2.0)])
def test_nan_in_a_masked_row_changes_nothing(spec):
  hs, Ws, ht, Wt, mask, tok = _small()
  row = int(np.flatnonzero(mask == 0)[0])
  f = jax.jit(
    jax.value_and_grad(lambda h, W, t: kl.distill_loss(h, W, t, Wt, mask, spec)[0], (0, 1))
  )
  loss, (dh, dW) = f(hs, Ws, ht)
  hs_bad, ht_bad = hs.copy(), ht.copy()
  hs_bad[row], ht_bad[row] = np.nan, np.inf
  loss2, (dh2, dW2) = f(hs_bad, Ws, ht_bad)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  np.testing.assert_allclose(dW2, dW, rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(dh2)) and not np.any(dh2[row])


def test_numpy_alpha_outside_unit_interval_is_refused():
  for alpha in (np.float32(1.5), np.float64(-0.1), np.array(1.5), jnp.float32(2.0), float("nan")):
    with pytest.raises(ValueError, match="alpha"):
      _call(spec=S("mixed"), alpha=alpha)
  _call(spec=S("mixed"), alpha=np.float32(0.25))  # a valid numpy alpha passes
  with pytest.raises(ValueError, match="alpha"):
    S("mixed", alpha=np.float32(1.5)).validate()
  assert S("mixed", alpha=np.float32(0.5)).validate()


@pytest.mark.parametrize("t", [float("inf"), float("nan"), np.float32(np.inf), -1.0])
def test_non_finite_temperature_is_refused(t):
  with pytest.raises(ValueError, match="temperature.*finite"):
    _call(spec=S(temperature=t))


def test_negative_or_non_finite_mask_is_refused():
  hs, Ws, ht, Wt, mask, tok = _small()
  for value in (-1.0, np.nan, np.inf):
    bad = mask.copy()
    bad[2] = value
    with pytest.raises(ValueError, match=r"mask_N\[2\]"):
      kl.distill_loss(hs, Ws, ht, Wt, bad, S("reverse"))
  bad = mask.copy()
  bad[2] = -1.0
  f = jax.jit(lambda m: kl.distill_loss(hs, Ws, ht, Wt, m, S("reverse"))[0])
  assert np.isnan(f(bad)) and f(mask) > 0
