"""The engine against upstream JetStream's final engine API (issue 11): request ids on
insert, get_result_at_slots, function samplers, typed PRNG keys, the tokenizer,
load_params from checkpoints, prefix caching (existing_prefix) and chunked prefill, and
an orchestrator-style driver. Same tiny decoder and (2,2,2) CPU mesh as test_engine.py;
references are full (uncached) forwards of the same params.
"""

import collections
import json
import os
import types
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_engine import CFG

# The same tiny decoder, mesh, engine and uncached references as test_engine.py (imported:
# the fixtures are shared, not copied; this directory is on sys.path under pytest).
from test_engine import B
from test_engine import P
from test_engine import R
from test_engine import eng  # noqa: F401
from test_engine import full_logits  # noqa: F401
from test_engine import greedy_reference
from test_engine import make_engine
from test_engine import mesh  # noqa: F401
from test_engine import params_gd  # noqa: F401

from dkd_jax.core import checkpointing
from dkd_jax.data import arithmetic
from dkd_jax.generate import engine as engine_lib
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.models import hf
from dkd_jax.runs import workdir
from dkd_jax.train import step as train

PROMPTS = [
  [1, 5, 7, 9, 3],
  [2, 8],
  [4, 4, 6, 11, 13, 17, 19, 23, 29, 31, 2],
  [3],
  [9, 9, 9],
  [10, 20, 30, 40, 50, 60, 70],
]
LONG = [4, 4, 6, 11, 13, 17, 19, 23, 29, 31, 2, 8, 5]  # 13 tokens: 4 chunks of 4


def greedy_fn(logits_BxV):
  """Upstream-style sampler: logits only (module level: one object, one compile)."""
  return jnp.argmax(logits_BxV, axis=-1)


def categorical_fn(logits_BxV, keys_B):
  """A keyed function sampler: the engine passes per-row typed keys."""
  return jax.vmap(jax.random.categorical)(keys_B, logits_BxV)


@pytest.fixture(scope="module")
def chunked(mesh, params_gd):
  return make_engine(mesh, params_gd[0], prefill_chunk_size=4)


def teacher_forced(full_logits, params, tokens, p, r):
  """(logprob [r], entropy [r]) of tokens[p:p+r] under one full forward."""
  logp = jax.nn.log_softmax(jnp.asarray(full_logits(params, tokens[: p + r])[p - 1 : p + r - 1]))
  lp = np.take_along_axis(np.asarray(logp), np.asarray(tokens[p : p + r])[:, None], 1)[:, 0]
  return lp, np.asarray(-jnp.sum(jnp.exp(logp) * logp, axis=-1))


def decode_greedy(eng, params, prefix, first, n_steps, slot=0):
  """Tokens of one prefix decoded alone in `slot`: the first token, then n_steps more."""
  state = eng.insert(prefix, eng.init_decode_state(), slot)
  got = [int(first.data[0, 0])]
  for _ in range(n_steps):
    state, res = eng.generate(params, state)
    got.append(int(res.get_result_at_slot(slot).tokens[0, 0]))
  return got


# ----------------------------------------------------------------------------- item 1


def test_insert_accepts_request_id_and_keyword_sample_index(eng, params_gd):
  _, params = params_gd
  padded, n = eng.pad_to_bucket(PROMPTS[0])
  prefix, first = eng.prefill_multisampling(
    params=params,
    padded_tokens=padded,
    true_length=n,
    sampler=sampling.Sampler(temperature=2.0),
    num_samples=2,
    rng=5,
    request_id=uuid.uuid4(),
  )
  state = eng.insert(prefix, eng.init_decode_state(), 1, request_id=uuid.uuid4())
  state = eng.insert(prefix, state, 2, uuid.uuid4(), sample_index=1)  # upstream positional
  tokens = np.asarray(state.out["token"])[:, 0]
  assert tokens[1] == first.data[0, 0] and tokens[2] == first.data[1, 0]
  assert list(np.asarray(state.done_B)) == [True, False, False, True]


# ----------------------------------------------------------------------------- item 2


def test_get_result_at_slots_matches_per_slot(eng, params_gd):
  _, params = params_gd
  state = eng.init_decode_state()
  for slot, prompt in ((0, PROMPTS[0]), (2, PROMPTS[1])):
    padded, n = eng.pad_to_bucket(prompt)
    state = eng.insert(
      eng.prefill(params=params, padded_tokens=padded, true_length=n)[0], state, slot
    )
  state, res = eng.generate(params, state)
  for result in (res, res.convert_to_numpy()):
    many = result.get_result_at_slots((2, 0, 1))
    assert many.tokens.shape == (3, 1) and many.lengths.shape == (3,)
    for i, slot in enumerate((2, 0, 1)):
      one = result.get_result_at_slot(slot)
      for field in ("tokens", "valid", "lengths", "log_prob"):
        np.testing.assert_array_equal(
          np.asarray(getattr(many, field))[i], np.asarray(getattr(one, field))[0]
        )
    assert list(np.asarray(many.valid)[:, 0]) == [1, 1, 0]  # slot 1 is empty
    assert list(np.asarray(many.lengths)) == [2, 2, 0]


# ----------------------------------------------------------------------------- item 3


def test_function_sampler_tokens_and_stats(mesh, eng, params_gd, full_logits):
  graphdef, params = params_gd
  prompts = PROMPTS[:3]
  for run in (
    lambda: rollout_lib.rollout(eng, params, prompts, sampler=greedy_fn),
    lambda: rollout_lib.rollout(make_engine(mesh, graphdef, sampler=greedy_fn), params, prompts),
  ):
    out = run()
    for i, prompt in enumerate(prompts):
      p, r = out["prompt_len"][i], out["response_len"][i]
      assert list(out["tokens"][i, p : p + r]) == greedy_reference(full_logits, params, prompt, R)
      lp, ent = teacher_forced(full_logits, params, out["tokens"][i], p, r)
      sl = slice(p - 1, p + r - 1)
      np.testing.assert_allclose(out["logprobs"][i, sl], lp, atol=1e-5)
      np.testing.assert_allclose(out["entropies"][i, sl], ent, atol=1e-5)
      assert np.all(np.isnan(out["sampling_logprobs"][i, sl]))  # documented: unknown
  # Keyed: per-request randomness (seeded, independent of scheduling); stats still exact.
  run = lambda k: rollout_lib.rollout(
    eng, params, prompts, sampler=categorical_fn, seed=4, sync_every=k
  )
  a, b = run(3), run(1)
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  counts = eng.compile_counts()
  np.testing.assert_array_equal(run(1)["tokens"], b["tokens"])
  assert eng.compile_counts() == counts  # keyed by the function object: no recompile
  for i in range(len(prompts)):
    p, r = a["prompt_len"][i], a["response_len"][i]
    lp, _ = teacher_forced(full_logits, params, a["tokens"][i], p, r)
    np.testing.assert_allclose(a["logprobs"][i, p - 1 : p + r - 1], lp, atol=1e-5)
  assert any(k[1] is categorical_fn for k in eng._jits if len(k) > 1)


def test_function_sampler_errors(eng, params_gd):
  _, params = params_gd

  class Unhashable:
    __hash__ = None

    def __call__(self, logits):
      return jnp.argmax(logits, -1)

  padded, n = eng.pad_to_bucket(PROMPTS[0])
  with pytest.raises(TypeError, match="hashable"):
    eng.prefill(params=params, padded_tokens=padded, true_length=n, sampler=Unhashable())
  with pytest.raises(TypeError, match="Sampler or a function"):
    engine_lib.Engine(
      CFG,
      None,
      max_concurrent_decodes=1,
      max_prefill_length=P,
      max_decode_length=R,
      sampler="greedy",
    )
  with pytest.raises(ValueError, match="integer token ids"):
    eng.prefill(params=params, padded_tokens=padded, true_length=n, sampler=jnp.max)


# ----------------------------------------------------------------------------- item 4


def test_typed_prng_key_equals_seed_and_raw_key(eng, params_gd):
  _, params = params_gd
  padded, n = eng.pad_to_bucket(PROMPTS[2])
  hot = sampling.Sampler(temperature=3.0)
  run = lambda rng: eng.prefill_multisampling(
    params=params, padded_tokens=padded, true_length=n, sampler=hot, num_samples=4, rng=rng
  )
  by_seed, by_typed, by_raw = run(11), run(jax.random.key(11)), run(jax.random.PRNGKey(11))
  for other in (by_typed, by_raw):
    np.testing.assert_array_equal(np.asarray(other[0].keys_Nx2), np.asarray(by_seed[0].keys_Nx2))
    np.testing.assert_array_equal(np.asarray(other[1].data), np.asarray(by_seed[1].data))
  assert not np.array_equal(
    np.asarray(run(jax.random.key(12))[1].data), np.asarray(by_seed[1].data)
  )
  with pytest.raises(ValueError, match="uint32"):
    run(jax.random.key(11, impl="rbg"))


# ----------------------------------------------------------------------------- item 5


def test_get_tokenizer(mesh, eng, params_gd):
  with pytest.raises(ValueError, match="tokenizer="):
    eng.get_tokenizer()
  tok = arithmetic.CharTokenizer()
  with_tok = make_engine(mesh, params_gd[0], tokenizer=tok)
  assert with_tok.get_tokenizer() is tok
  assert with_tok.build_tokenizer(with_tok.get_tokenizer()) is tok  # the orchestrator's path


# ----------------------------------------------------------------------------- item 6


def _assert_same_params(got, want, shardings):
  for g, w, s in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(shardings)):
    assert g.sharding.is_equivalent_to(s, g.ndim)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _write_run_dir(path, mesh, params):
  """A minimal run directory: the saved config's optimizer and one train-state checkpoint."""
  optim = dict(
    lr=2e-3, warmup_steps=20, weight_decay=0.01, clip_norm=1.0, b1=0.9, b2=0.98, end_lr_frac=0.1
  )
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"optim": optim, "train": {"steps": 10}}, f)
  optimizer = train.make_optimizer(types.SimpleNamespace(**optim), 10)
  state, _ = train.sharded_init_state(optimizer, mesh, CFG, params)
  ck = checkpointing.RunCheckpointer(os.path.join(path, "checkpoints"), every=1)
  ck.maybe_save(3, state, {})
  ck.close()


def test_load_params_random_run_dir_and_hf_dir(tmp_path, mesh, eng, params_gd, monkeypatch):
  _, params = params_gd
  _assert_same_params(eng.load_params(), params, eng.param_shardings)  # seed 0 = fixture
  monkeypatch.setattr(eng, "checkpoint_loader", workdir.load_params)
  bumped = jax.tree.map(lambda x: x * 1.5 + 0.25, params)
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  _write_run_dir(str(run_dir), mesh, bumped)
  _assert_same_params(eng.load_params(checkpoint=str(run_dir)), bumped, eng.param_shardings)
  with pytest.raises(FileNotFoundError, match="step 7"):
    eng.load_params(checkpoint=str(run_dir), step=7)
  hf_dir = str(tmp_path / "hf")
  hf.write_hf(hf_dir, CFG, bumped, None, None)
  _assert_same_params(eng.load_params(hf_dir), bumped, eng.param_shardings)
  with pytest.raises(FileNotFoundError, match="neither a run directory"):
    eng.load_params(str(tmp_path))


# ----------------------------------------------------------------------------- items 7, 8


def _full_prefill(eng, params, prompt):
  padded, n = eng.pad_to_bucket(prompt)
  return eng.prefill(params=params, padded_tokens=padded, true_length=n)


def test_existing_prefix_equals_full_prefill(eng, params_gd, full_logits):
  _, params = params_gd
  prompt, cut = LONG, 5
  ref_prefix, ref_first = _full_prefill(eng, params, prompt)
  want = greedy_reference(full_logits, params, prompt, R)
  head, _ = _full_prefill(eng, params, prompt[:cut])
  padded, n = eng.pad_to_bucket(prompt[cut:])
  prefix, first = eng.prefill(
    params=params, existing_prefix=head, padded_tokens=padded, true_length=n
  )
  # Upstream's handle (what its chunked-prefill driver builds from prefix["cache"]).
  handle = engine_lib.ExistingPrefix(
    cache=head["cache"], common_prefix_tokens=np.asarray(prompt[:cut])
  )
  prefix_u, first_u = eng.prefill(
    params=params, existing_prefix=handle, padded_tokens=padded, true_length=n
  )
  for pre, fst in ((prefix, first), (prefix_u, first_u)):
    assert int(pre.true_length) == len(prompt)
    assert pre.cache["k"].shape == ref_prefix.cache["k"].shape
    np.testing.assert_array_equal(np.asarray(fst.data), np.asarray(ref_first.data))
    np.testing.assert_allclose(np.asarray(fst.log_prob), np.asarray(ref_first.log_prob), atol=1e-5)
    np.testing.assert_allclose(np.asarray(fst.entropy), np.asarray(ref_first.entropy), atol=1e-5)
    assert decode_greedy(eng, params, pre, fst, R - 1) == want
  with pytest.raises(ValueError, match="max_prefill_length"):
    eng.prefill(params=params, existing_prefix=prefix, padded_tokens=padded, true_length=n)


def test_chunked_prefill_equals_one_shot(eng, chunked, params_gd, full_logits):
  _, params = params_gd
  assert chunked.use_chunked_prefill and chunked.prefill_chunk_size == 4
  assert not eng.use_chunked_prefill and eng.prefill_chunk_size == P
  ref_prefix, ref_first = _full_prefill(eng, params, LONG)
  prefix, first = _full_prefill(chunked, params, LONG)
  assert int(prefix.true_length) == len(LONG)
  np.testing.assert_array_equal(np.asarray(first.data), np.asarray(ref_first.data))
  np.testing.assert_allclose(np.asarray(first.log_prob), np.asarray(ref_first.log_prob), atol=1e-5)
  assert decode_greedy(chunked, params, prefix, first, R - 1) == greedy_reference(
    full_logits, params, LONG, R
  )
  # Through rollout, sampled: the same tokens and statistics as one-shot prefill.
  sampler = sampling.Sampler(temperature=0.9, top_k=40)
  prompts = [LONG, PROMPTS[0], PROMPTS[5]]
  a = rollout_lib.rollout(eng, params, prompts, sampler=sampler, seed=2)
  b = rollout_lib.rollout(chunked, params, prompts, sampler=sampler, seed=2)
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  for key in ("logprobs", "sampling_logprobs", "entropies"):
    np.testing.assert_allclose(a[key], b[key], atol=1e-5)
  for bad in (0, P + 1):
    with pytest.raises(ValueError, match="prefill_chunk_size"):
      make_engine(None, params_gd[0], prefill_chunk_size=bad)


# ----------------------------------------------------------------------------- orchestrator


def test_orchestrator_style_drive(eng, params_gd, full_logits):
  """prefill -> insert into a free slot with a request id -> generate -> read every
  active slot with get_result_at_slots -> free_resource when done, as upstream's
  orchestrator does; more requests than slots, so slots are reused."""
  _, params = params_gd
  queue = collections.deque(enumerate(PROMPTS))
  free, live, out = list(range(B)), {}, {}  # live: slot -> (request index, request id)
  state = eng.init_decode_state()
  while queue or live:
    while queue and free:
      i, prompt = queue.popleft()
      slot, request_id = free.pop(0), uuid.uuid4()
      padded, n = eng.pad_to_bucket(prompt)
      prefix, first = eng.prefill(
        params=params, padded_tokens=padded, true_length=n, request_id=request_id
      )
      state = eng.insert(prefix, state, slot, request_id=request_id)
      out[i] = [int(first.get_result_at_slot(0).tokens[0, 0])]
      live[slot] = (i, request_id)
    state, res = eng.generate(params, state)
    slots = sorted(live)
    got = res.convert_to_numpy().get_result_at_slots(slots)
    for row, slot in enumerate(slots):
      i = live[slot][0]
      if got.valid[row, 0]:
        out[i].append(int(got.tokens[row, 0]))
      if got.lengths[row] >= R or not got.valid[row, 0]:
        eng.free_resource(slot)
        del live[slot]
        free.append(slot)
  for i, prompt in enumerate(PROMPTS):
    assert out[i] == greedy_reference(full_logits, params, prompt, R), i


def test_prefill_batch_rows_equal_single_prefills(eng, params_gd):
  """Row i of one batched prefill = prompt i prefilled alone: its first token and stats,
  its cache at the real positions, and the tokens decoded after inserting it."""
  _, params = params_gd
  prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[3]]
  width = eng.bucket_for(max(map(len, prompts)))
  padded = np.zeros((3, width), np.int32)
  for i, p in enumerate(prompts):
    padded[i, : len(p)] = p
  keys = np.stack([sampling.request_key(10 + i) for i in range(3)])
  sampler = sampling.Sampler(temperature=1.0)
  pre, res = eng.prefill_batch(
    params=params,
    padded_tokens=padded,
    true_lengths=[len(p) for p in prompts],
    sampler=sampler,
    rngs=keys,
    max_new_tokens=[4, 5, 6],
  )
  state_b, state_1 = eng.init_decode_state(), eng.init_decode_state()
  for i, p in enumerate(prompts):
    one, one_res = eng.prefill(
      params=params,
      padded_tokens=eng.pad_to_bucket(p)[0],
      true_length=len(p),
      sampler=sampler,
      rng=keys[i],
      max_new_tokens=4 + i,
    )
    assert int(res.data[i, 0]) == int(one_res.data[0, 0])
    np.testing.assert_allclose(res.log_prob[i], one_res.log_prob[0], atol=1e-5)
    np.testing.assert_allclose(res.entropy[i], one_res.entropy[0], atol=1e-5)
    n = len(p)
    np.testing.assert_allclose(
      np.asarray(pre.cache["k"])[:, i, ..., :n],
      np.asarray(one.cache["k"])[:, 0, ..., :n],
      atol=1e-5,
    )
    np.testing.assert_allclose(
      np.asarray(pre.cache["v"])[:, i, :, :n], np.asarray(one.cache["v"])[:, 0, :, :n], atol=1e-5
    )
    state_b = eng.insert(pre, state_b, i, sample_index=i)
    state_1 = eng.insert(one, state_1, i)
  state_b = eng.generate_steps(params, state_b, 8, sampler)
  state_1 = eng.generate_steps(params, state_1, 8, sampler)
  np.testing.assert_array_equal(np.asarray(state_b.num_B)[:3], [4, 5, 6])
  np.testing.assert_array_equal(np.asarray(state_b.out["token"]), np.asarray(state_1.out["token"]))
  np.testing.assert_allclose(
    np.asarray(state_b.out["logprob"]), np.asarray(state_1.out["logprob"]), atol=1e-5
  )


def test_prefill_batch_bad_inputs(eng, params_gd):
  _, params = params_gd
  with pytest.raises(ValueError, match="not a prefill bucket"):
    eng.prefill_batch(params=params, padded_tokens=np.ones((2, 5), np.int32), true_lengths=[2, 3])
  with pytest.raises(ValueError, match="true_lengths"):
    eng.prefill_batch(params=params, padded_tokens=np.ones((2, 8), np.int32), true_lengths=[0, 3])
  with pytest.raises(ValueError, match="max_new_tokens"):
    eng.prefill_batch(
      params=params, padded_tokens=np.ones((1, 8), np.int32), true_lengths=[3], max_new_tokens=R + 1
    )
