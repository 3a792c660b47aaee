"""Generation engine + rollout driver on a tiny random decoder over a (2,2,2) CPU mesh.

References are full (uncached) forwards of the same params: cached greedy decoding
must pick their argmax, and every reported log-prob / entropy must equal the
teacher-forced recompute.
"""

import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core import sharding
from dkd_jax.generate import engine as engine_lib
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model
from dkd_jax.models import kv_cache

CFG = model.ModelConfig(
  vocab_size=96,
  d_model=32,
  d_ff=64,
  n_layers=2,
  n_heads=4,
  n_kv_heads=2,
  head_dim=8,
  tie_embeddings=False,
  max_seq_len=64,
)
P, R, B = 16, 10, 4
PROMPTS = [
  [1, 5, 7, 9, 3],
  [2, 8],
  [4, 4, 6, 11, 13, 17, 19, 23, 29, 31, 2],
  [3],
  [9, 9, 9],
  [10, 20, 30, 40, 50, 60, 70],
  [7, 1],
  [5, 6, 7, 8, 9, 10, 11, 12, 13],
]
SAMPLER = sampling.Sampler(temperature=0.9, top_p=0.9, top_k=40)


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh((2, 2, 2))


@pytest.fixture(scope="module")
def params_gd(mesh):
  graphdef, params = model.init_params(CFG, mesh, seed=0)
  return graphdef, params


def make_engine(mesh, graphdef, **kw):
  return engine_lib.Engine(
    CFG,
    graphdef,
    mesh=mesh,
    max_concurrent_decodes=B,
    max_prefill_length=P,
    max_decode_length=R,
    prefill_buckets=(8, P),
    **kw,
  )


@pytest.fixture(scope="module")
def eng(mesh, params_gd):
  return make_engine(mesh, params_gd[0])


@pytest.fixture(scope="module")
def full_logits(params_gd):
  graphdef = params_gd[0]
  fn = jax.jit(lambda p, t: model.logits(graphdef, p, t)[0])

  # Fixed width P + R: one compile; causal attention makes the right padding harmless.
  def run(params, tokens):
    buf = np.zeros((1, P + R), np.int32)
    buf[0, : len(tokens)] = tokens
    return np.asarray(fn(params, buf))[0, : len(tokens)]

  return run


def greedy_reference(full_logits, params, prompt, n):
  seq = list(prompt)
  for _ in range(n):
    seq.append(int(np.argmax(full_logits(params, seq)[-1])))
  return seq[len(prompt) :]


def teacher_forced(full_logits, params, tokens, p, r):
  """(logprob [r], entropy [r], logits [r, V]) of tokens[p:p+r] from one full forward."""
  logits = full_logits(params, tokens[: p + r])[p - 1 : p + r - 1]
  logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  lp = np.take_along_axis(np.asarray(logp), np.asarray(tokens[p : p + r])[:, None], 1)[:, 0]
  ent = -np.sum(np.exp(logp) * logp, axis=-1)
  return lp, np.asarray(ent), logits


def test_greedy_cached_decode_equals_full_forward_argmax(eng, params_gd, full_logits):
  """Raw API: prefill -> insert into slot 3 -> generate, every step checked."""
  _, params = params_gd
  prompt = PROMPTS[2]  # 11 tokens -> bucket 16, so decode overwrites 5 padded slots
  ref = greedy_reference(full_logits, params, prompt, R)
  padded, n = eng.pad_to_bucket(prompt)
  assert padded.shape == (16,)
  prefix, first = eng.prefill(params=params, padded_tokens=padded, true_length=n)
  state = eng.insert(prefix, eng.init_decode_state(), 3)
  got, logprobs = [int(first.data[0, 0])], [float(first.log_prob[0, 0])]
  for step in range(R - 1):
    state, res = eng.generate(params, state)
    slot = res.get_result_at_slot(3)
    assert int(slot.valid[0, 0]) == 1 and int(slot.lengths[0]) == step + 2
    got.append(int(slot.tokens[0, 0]))
    logprobs.append(float(slot.log_prob[0, 0]))
  assert got == ref
  lp, _, _ = teacher_forced(full_logits, params, prompt + got, len(prompt), R)
  np.testing.assert_allclose(logprobs, lp, atol=1e-5)
  state, res = eng.generate(params, state)  # limit reached: the slot stays finished
  assert int(res.data[3, 1]) == 0 and bool(state.done_B[3])
  assert not jax.tree.leaves(params)[0].is_deleted()  # params are never donated


def test_rollout_greedy_and_layout(eng, params_gd, full_logits):
  _, params = params_gd
  out = rollout_lib.rollout(eng, params, PROMPTS, sampler=sampling.GREEDY, sync_every=3)
  width = max(map(len, PROMPTS))
  assert out["tokens"].shape == (len(PROMPTS), width + R)
  for i, prompt in enumerate(PROMPTS):
    p, r = out["prompt_len"][i], out["response_len"][i]
    assert p == len(prompt) and r == R and out["truncated"][i]
    assert list(out["tokens"][i, p : p + r]) == greedy_reference(full_logits, params, prompt, R)
    # Alignment: loss_mask[t] = 1 iff tokens[t+1] is a response token.
    assert list(np.nonzero(out["loss_mask"][i])[0]) == list(range(p - 1, p + r - 1))


def test_sampled_logprobs_equal_teacher_forced_recompute(eng, params_gd, full_logits):
  _, params = params_gd
  out = rollout_lib.rollout(eng, params, PROMPTS, sampler=SAMPLER, seed=3, sync_every=4)
  for i in range(len(PROMPTS)):
    p, r = out["prompt_len"][i], out["response_len"][i]
    lp, ent, logits = teacher_forced(full_logits, params, out["tokens"][i], p, r)
    sl = slice(p - 1, p + r - 1)
    np.testing.assert_allclose(out["logprobs"][i, sl], lp, atol=1e-5)
    np.testing.assert_allclose(out["entropies"][i, sl], ent, atol=1e-5)
    samp = jax.nn.log_softmax(sampling.sampling_logits(SAMPLER, jnp.asarray(logits)), -1)
    want = np.take_along_axis(np.asarray(samp), out["tokens"][i, p : p + r, None], 1)[:, 0]
    np.testing.assert_allclose(out["sampling_logprobs"][i, sl], want, atol=1e-5)
    assert np.all(np.isfinite(want))  # every sampled token lies inside the top-k/top-p set
  masked = out["logprobs"] * (1 - out["loss_mask"])
  assert not masked.any()


def test_same_seed_same_rollout_different_seed_differs(eng, params_gd):
  _, params = params_gd
  run = lambda seed, k: rollout_lib.rollout(
    eng, params, PROMPTS, sampler=SAMPLER, seed=seed, sync_every=k
  )
  a, b, c = run(7, 4), run(7, 1), run(8, 4)  # sync_every changes scheduling, not samples
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  np.testing.assert_array_equal(a["logprobs"], b["logprobs"])
  assert not np.array_equal(a["tokens"], c["tokens"])


def test_slot_reuse_with_eos_matches_each_prompt_alone(mesh, params_gd, full_logits):
  graphdef, params = params_gd
  refs = [greedy_reference(full_logits, params, p, R) for p in PROMPTS]
  eos = refs[0][2]  # by construction prompt 0 stops at its 3rd token; others vary
  eng = make_engine(mesh, graphdef, eos_ids=(eos,))
  out = rollout_lib.rollout(eng, params, PROMPTS, sampler=sampling.GREEDY, sync_every=2)
  lengths = set()
  for i, ref in enumerate(refs):
    want = ref[: ref.index(eos) + 1] if eos in ref else ref
    p, r = out["prompt_len"][i], out["response_len"][i]
    assert list(out["tokens"][i, p : p + r]) == want
    assert out["truncated"][i] == (eos not in ref)
    assert not out["tokens"][i, p + r :].any()  # right padding (pad_id 0)
    lengths.add(int(r))
  assert len(lengths) >= 2 and out["response_len"][0] == 3
  alone = rollout_lib.rollout(eng, params, [PROMPTS[5]], sampler=sampling.GREEDY)
  p5 = len(PROMPTS[5])
  assert list(alone["tokens"][0, : p5 + alone["response_len"][0]]) == list(
    out["tokens"][5, : p5 + out["response_len"][5]]
  )


def test_param_updates_do_not_recompile(eng, params_gd):
  _, params = params_gd
  shardings = jax.tree.map(lambda x: x.sharding, params)
  bump = jax.jit(lambda p, s: jax.tree.map(lambda x: x * (1 + s), p), out_shardings=shardings)
  counts, outs = None, []
  for i in range(5):
    new = bump(params, np.float32(0.05 * i))
    outs.append(rollout_lib.rollout(eng, new, PROMPTS[:4], sampler=SAMPLER, seed=1))
    if i == 0:
      counts = eng.compile_counts()
    assert eng.compile_counts() == counts
  # Prefill and insert: one executable per (prefill bucket, power-of-two number of prompts
  # prefilled together); one per sampler (and step count) elsewhere.
  shapes = len(eng.buckets) * (B.bit_length() + 1)
  assert all(v <= shapes for v in counts.values()), counts
  assert all(
    v == 1 for k, v in counts.items() if k.startswith(("generate", "decode_params", "init"))
  ), counts
  for a, b in zip(outs, outs[1:]):
    assert not np.allclose(a["logprobs"], b["logprobs"])


def test_bad_inputs(eng, params_gd):
  _, params = params_gd
  with pytest.raises(ValueError, match="max_prefill_length"):
    rollout_lib.rollout(eng, params, [list(range(1, P + 3))])
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    rollout_lib.rollout(eng, params, [[1, 2], []])
  with pytest.raises(ValueError, match="empty prompt"):
    eng.prefill(params=params, padded_tokens=np.zeros(8, np.int32), true_length=0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    rollout_lib.rollout(eng, params, [[1, 2]], max_new_tokens=R + 1)
  long = list(range(1, P + 4))
  out = rollout_lib.rollout(eng, params, [long, [1, 2]], truncate_prompts=True, max_new_tokens=2)
  assert list(out["prompt_truncated"]) == [True, False]
  assert list(out["prompt_tokens"][0]) == [1] + long[-(P - 1) :]
  arr = np.array([[1, 2, 3, 0], [4, 0, 0, 0]], np.int32)
  out = rollout_lib.rollout(eng, params, arr, prompt_lens=[3, 1], max_new_tokens=2)
  assert out["tokens"].shape == (2, 6) and list(out["prompt_len"]) == [3, 1]
  for field, kw in (
    ("top_p", dict(top_p=0.0)),
    ("top_p", dict(top_p=1.5)),
    ("temperature", dict(temperature=-0.1)),
    ("top_k", dict(top_k=-1)),
  ):
    with pytest.raises(ValueError, match=field):
      sampling.Sampler(**kw)


def test_decode_phases_same_rollout_over_shorter_cache_views(mesh, params_gd, full_logits):
  """Phased decoding (views of 16, 24, then all 26 slots) reproduces the one-phase rollout
  through refills, EOS, slots past a view at entry and finished slots; its program
  attends over a 16-slot view, the one-phase program never does."""
  graphdef, params = params_gd
  assert kv_cache.view_lengths(26, 3) == (16, 24, 26)
  assert kv_cache.view_lengths(160, 2) == (80, 160)
  assert kv_cache.view_lengths(5, 4) == (5,)  # rounded up to 8, capped at the cache
  eos = greedy_reference(full_logits, params, PROMPTS[0], R)[2]
  engines = [make_engine(mesh, graphdef, eos_ids=(eos,), decode_phases=n) for n in (1, 3)]
  outs = [
    rollout_lib.rollout(e, params, PROMPTS, sampler=SAMPLER, seed=5, sync_every=s)
    for e in engines
    for s in (1, 3)
  ]
  assert len(set(outs[0]["response_len"].tolist())) >= 2  # EOS ended some rows early
  for out in outs[1:]:
    np.testing.assert_array_equal(out["tokens"], outs[0]["tokens"])
    for k in ("logprobs", "entropies", "sampling_logprobs"):
      np.testing.assert_allclose(out[k], outs[0][k], atol=1e-6)
  view = "4x2x8x16xf32"  # one layer's keys [B, K, Dh, 16 slots]
  texts = [
    e._jit("generate_steps", SAMPLER, params=params)  # pylint: disable=protected-access
    .lower(params, e.init_decode_state(), np.int32(2), np.int32(B))
    .as_text()
    for e in engines
  ]
  assert view not in texts[0] and view in texts[1]
  with pytest.raises(ValueError, match="decode_phases"):
    make_engine(mesh, graphdef, decode_phases=0)


def test_multisampling_bulk_insert(eng, params_gd):
  _, params = params_gd
  padded, n = eng.pad_to_bucket(PROMPTS[0])
  prefix, first = eng.prefill_multisampling(
    params=params,
    padded_tokens=padded,
    true_length=n,
    sampler=sampling.Sampler(temperature=2.0),
    num_samples=B,
    rng=5,
  )
  state = eng.bulk_insert(prefix, eng.init_decode_state(), list(range(B)))
  np.testing.assert_array_equal(np.asarray(state.out["token"])[:, 0], first.data[:, 0])
  assert len(set(first.data[:, 0].tolist())) > 1


def _run_jetstream_roundtrip(engine_cls, mesh, params_gd):
  graphdef, params = params_gd
  eng = engine_cls(
    CFG,
    graphdef,
    mesh=mesh,
    max_concurrent_decodes=B,
    max_prefill_length=P,
    max_decode_length=R,
    prefill_buckets=(8, P),
  )
  padded, n = eng.pad_to_bucket(PROMPTS[0])
  prefix, first = eng.prefill(params=params, padded_tokens=padded, true_length=n)
  state = eng.insert(prefix, eng.init_decode_state(), 1)
  state, res = eng.generate(params, state)
  assert int(res.get_result_at_slot(1).lengths[0]) == 2
  return eng


def test_subclasses_installed_jetstream(mesh, params_gd):
  if engine_lib.jetstream_api is None:
    pytest.skip(
      "jetstream is not importable here ("
      + engine_lib.JETSTREAM_IMPORT_ERROR
      + "); google-jetstream 0.2.2's engine_api imports token_utils -> seqio -> "
      "TensorFlow, which CI does not install"
    )
  eng = _run_jetstream_roundtrip(engine_lib.Engine, mesh, params_gd)
  assert isinstance(eng, engine_lib.jetstream_api.Engine)


def _jetstream_src():
  """Directory holding the `jetstream/` package: DKD_JETSTREAM_SRC, else the installed
  distribution (CI installs google-jetstream==0.2.2 with --no-deps: its files, no seqio)."""
  if os.environ.get("DKD_JETSTREAM_SRC"):
    return os.environ["DKD_JETSTREAM_SRC"]
  try:
    import importlib.metadata as md

    return str(md.distribution("google-jetstream").locate_file(""))
  except Exception:
    return None


def test_satisfies_jetstream_abc_from_wheel_source(mesh, params_gd, monkeypatch):
  """google-jetstream 0.2.2's real Engine ABC (engine_api.py from the installed package or
  an unpacked wheel) with its seqio-bound token_utils stubbed: no abstract method is left
  and prefill -> insert -> generate runs through the subclass."""
  src = _jetstream_src()
  if not src or not os.path.exists(os.path.join(src, "jetstream", "engine", "engine_api.py")):
    pytest.skip(
      "google-jetstream is not installed: python -m pip install --no-deps google-jetstream==0.2.2"
    )
  stub = types.ModuleType("jetstream.engine.token_utils")
  for name in ("jetstream", "jetstream.engine"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(src, *name.split("."))]
    monkeypatch.setitem(sys.modules, name, pkg)
  monkeypatch.setitem(sys.modules, "jetstream.engine.token_utils", stub)
  spec = importlib.util.spec_from_file_location(
    "jetstream.engine.engine_api", os.path.join(src, "jetstream", "engine", "engine_api.py")
  )
  api = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(api)
  cls = type("JetStreamDkd", (engine_lib.Engine, api.Engine), {})
  assert not cls.__abstractmethods__
  _run_jetstream_roundtrip(cls, mesh, params_gd)


def test_decode_params_gather_fsdp_once_and_keep_tensor(eng, params_gd):
  """Per-layer decode weights drop the FSDP axis (gathered once per rollout, not per
  token) and keep the 'tensor' one; the params pass through untouched."""
  _, params = params_gd
  dp = eng.decode_params(params)
  assert dp.params is params and eng.decode_params(dp) is dp
  flat = lambda spec: [a for e in spec for a in ((e,) if isinstance(e, str) else (e or ()))]
  assert len(dp.layers_L) == CFG.n_layers
  for name, w in dp.layers_L[0].items():
    stacked = flat(params["layers"][name].sharding.spec)
    got = flat(w.sharding.spec)
    assert "fsdp" not in got, (name, w.sharding.spec)
    assert ("tensor" in got) == ("tensor" in stacked), (name, w.sharding.spec)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(params["layers"][name][0]))
  assert any("fsdp" in flat(a.sharding.spec) for a in jax.tree.leaves(params["layers"]))
