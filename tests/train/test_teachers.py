"""The one step against teachers with another tokenizer, and against several teachers."""

import jax
import numpy as np
import pytest

from dkd_jax.core import rng as rng_lib
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
  xt = alignment.xtok_arrays(
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
