"""The one step against teachers with another tokenizer, and against several teachers."""

import jax
import numpy as np
import pytest

from configs import common
from dkd_jax.core import rng as rng_lib
from dkd_jax.core import sharding
from dkd_jax.data import alignment
from dkd_jax.data import arithmetic
from dkd_jax.data import packing
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.train import step as train
from dkd_jax.train import teachers as teachers_lib

CHAR = arithmetic.CharTokenizer()
STUDENT = model_lib.ModelConfig(
  vocab_size=32, d_model=32, d_ff=64, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16
)
TEACHER = model_lib.ModelConfig(
  vocab_size=32, d_model=48, d_ff=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12
)


def _batch(student_rows, seed=0):
  """Packed char-tokenized chain-like rows (some ending with EOS) and the step's batch."""
  r = np.random.default_rng(seed)
  texts = ["3*4=12\n#### 12", "1+2=3\n?1+2=3\n#### 3", "9-8=1", "2+2=4\n#### 4", "5*5=25\n"]
  B = len(student_rows)
  prompts = [[CHAR.bos_id] + CHAR.encode(f"{b}+1=\n") for b in range(B)]
  resp = [CHAR.encode(texts[b % len(texts)]) + ([CHAR.eos_id] if b % 2 else []) for b in range(B)]
  P, R = max(map(len, prompts)), max(map(len, resp))
  pad = lambda rows, w: np.array([x + [0] * (w - len(x)) for x in rows])
  tokens, mask = packing.pack(
    pad(prompts, P), [len(p) for p in prompts], pad(resp, R), [len(x) for x in resp], 0
  )
  batch = train.make_batch(tokens, mask, student_rows, 0.0, rng_lib.key_data(seed, "train_step"))
  return batch, prompts, r


def _grad_fn(static, t_params, batch):
  fn = lambda p: train.distill_loss_fn(static, p, t_params, batch)
  return jax.jit(jax.value_and_grad(fn, has_aux=True))


@pytest.mark.parametrize(
  "spec",
  [
    kl_lib.KLSpec(kind="reverse", estimator="sampled_token", chunk=16),
    kl_lib.KLSpec(kind="mixed", alpha=0.4, estimator="sampled_token", chunk=16),
  ],
  ids=["reverse", "mixed"],
)
def test_one_tokenizer_cross_path_equals_the_sampled_token_step(spec):
  """Done-when 1: with identical tokenizers the cross-tokenizer path (alignment from the
  batch builder, chunk estimator, mapped forward) gives the step's loss and gradients."""
  s_gd, s_params = model_lib.init_params(STUDENT, None, 0)
  t_gd, t_params = model_lib.init_params(TEACHER, None, 1)
  batch, prompts, _ = _batch(np.ones(5, bool))
  xt, _ = alignment.xtok_arrays(
    batch["tokens"], batch["loss_mask"], prompts, CHAR, CHAR, batch["tokens"].shape[1]
  )
  batch = dict(batch, alpha=np.float32(spec.alpha), key=jax.random.wrap_key_data(batch["key"]))
  cross = dict(batch, teacher_w=np.ones((5, 1), np.float32), **{f"{k}_0": v for k, v in xt.items()})
  vmap = tuple(alignment.vocab_map(CHAR, CHAR, TEACHER.vocab_size, STUDENT.vocab_size).tolist())
  old = train.StepStatic(s_gd, t_gd, spec, None)
  new = train.StepStatic(s_gd, None, spec, None, teachers=(teachers_lib.TeacherStatic(t_gd, vmap),))
  (l0, m0), g0 = _grad_fn(old, t_params, batch)(s_params)
  (l1, m1), g1 = _grad_fn(new, (t_params,), cross)(s_params)
  np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-6)
  for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(m1["ent_s"], m0["ent_s"], rtol=1e-5)
  np.testing.assert_allclose(m1["ent_t"], m0["ent_t"], rtol=1e-5)


def test_routing_and_weights_choose_each_sequences_teacher():
  """Two teachers (one through the kernel, one through the cross-tokenizer path): one-hot
  rows give each sequence its own teacher's signal; fixed weights mix the two losses."""
  spec = kl_lib.KLSpec(kind="forward", chunk=16)
  s_gd, s_params = model_lib.init_params(STUDENT, None, 0)
  ta_gd, ta = model_lib.init_params(TEACHER, None, 1)
  tb_gd, tb = model_lib.init_params(TEACHER, None, 2)
  batch, prompts, _ = _batch(np.ones(4, bool), seed=1)
  xt, _ = alignment.xtok_arrays(
    batch["tokens"], batch["loss_mask"], prompts, CHAR, CHAR, batch["tokens"].shape[1]
  )
  batch = dict(
    batch, key=jax.random.wrap_key_data(batch["key"]), **{f"{k}_1": v for k, v in xt.items()}
  )
  vmap = tuple(alignment.vocab_map(CHAR, CHAR, TEACHER.vocab_size, STUDENT.vocab_size).tolist())
  two = train.StepStatic(
    s_gd,
    None,
    spec,
    None,
    teachers=(teachers_lib.TeacherStatic(ta_gd), teachers_lib.TeacherStatic(tb_gd, vmap)),
  )

  def single(t_gd, t_params, rows):
    mask = batch["loss_mask"] * np.isin(np.arange(4), rows)[:, None]
    static = train.StepStatic(s_gd, t_gd, spec, None)
    return _grad_fn(static, t_params, dict(batch, loss_mask=mask))(s_params)

  def routed(w):
    return _grad_fn(two, (ta, tb), dict(batch, teacher_w=np.asarray(w, np.float32)))(s_params)

  route = [[1, 0], [0, 1], [1, 0], [0, 1]]
  (loss, m), g = routed(route)
  (la, _), ga = single(ta_gd, ta, [0, 2])
  (lb, _), gb = single(tb_gd, tb, [1, 3])
  na = float(np.sum(batch["loss_mask"][[0, 2]]))
  nb = float(np.sum(batch["loss_mask"][[1, 3]]))
  np.testing.assert_allclose(m["loss_teacher0"], la, rtol=1e-5)
  np.testing.assert_allclose(m["loss_teacher1"], lb, rtol=1e-5)
  np.testing.assert_allclose(loss, (na * la + nb * lb) / (na + nb), rtol=1e-5)
  for x, ya, yb in zip(*(jax.tree.leaves(t) for t in (g, ga, gb))):
    np.testing.assert_allclose(x, (na * ya + nb * yb) / (na + nb), rtol=2e-4, atol=2e-6)
  (swapped, _), _ = routed([r[::-1] for r in route])
  assert abs(float(swapped) - float(loss)) > 1e-4  # the routing changes the signal
  # one teacher for every row == that teacher alone
  (only_a, _), _ = routed([[1, 0]] * 4)
  (la_all, _), _ = single(ta_gd, ta, [0, 1, 2, 3])
  np.testing.assert_allclose(only_a, la_all, rtol=1e-5)
  # fixed weights mix the losses
  (mixed, _), _ = routed([[0.25, 0.75]] * 4)
  (lb_all, _), _ = single(tb_gd, tb, [0, 1, 2, 3])
  np.testing.assert_allclose(mixed, 0.25 * la_all + 0.75 * lb_all, rtol=1e-5)


def test_two_teachers_step_on_a_2x2x2_mesh_keeps_shardings_and_loss():
  """The multi-teacher / cross-tokenizer step sharded like every step: batch over
  ('data', 'fsdp'), vocab over 'tensor'; same loss as without a mesh."""
  spec = kl_lib.KLSpec(kind="mixed", alpha=0.5, estimator="sampled_token", chunk=16)
  mesh = sharding.make_mesh((2, 2, 2))
  batch, prompts, _ = _batch(np.ones(8, bool), seed=2)
  xt, _ = alignment.xtok_arrays(
    batch["tokens"], batch["loss_mask"], prompts, CHAR, CHAR, batch["tokens"].shape[1]
  )
  w = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
  batch = dict(batch, alpha=np.float32(0.5), teacher_w=w, **{f"{k}_1": v for k, v in xt.items()})
  vmap = tuple(alignment.vocab_map(CHAR, CHAR, TEACHER.vocab_size, STUDENT.vocab_size).tolist())
  s_gd, s_ref = model_lib.init_params(STUDENT, None, 0)
  ta_gd, ta_ref = model_lib.init_params(TEACHER, None, 1)
  tb_gd, tb_ref = model_lib.init_params(TEACHER, None, 2)
  ts = (teachers_lib.TeacherStatic(ta_gd), teachers_lib.TeacherStatic(tb_gd, vmap))
  ref = train.StepStatic(s_gd, None, spec, None, teachers=ts)
  keyed = dict(batch, key=jax.random.wrap_key_data(batch["key"]))
  want = float(
    jax.jit(train.distill_loss_fn, static_argnums=0)(ref, s_ref, (ta_ref, tb_ref), keyed)[0]
  )
  _, s_params = model_lib.init_params(STUDENT, mesh, 0)
  _, ta = model_lib.init_params(TEACHER, mesh, 1)
  _, tb = model_lib.init_params(TEACHER, mesh, 2)
  opt = train.make_optimizer(common.base("tiny").optim, 10)
  static = train.StepStatic(s_gd, None, spec, opt, mesh, teachers=ts)
  state_shard = train.state_shardings(mesh, opt, STUDENT)
  state = jax.jit(lambda p: train.init_state(opt, p), out_shardings=state_shard)(s_params)
  t_shard = tuple(model_lib.param_shardings(mesh, TEACHER) for _ in ts)
  step = train.jit_train_step(static, state_shard, t_shard)
  new_state, metrics = step(
    state, jax.device_put(batch, train.batch_shardings(mesh, False, ts)), (ta, tb)
  )
  for a, sh in zip(jax.tree.leaves(new_state), jax.tree.leaves(state_shard)):
    assert a.sharding.is_equivalent_to(sh, a.ndim), (a.sharding, sh)
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-4)
