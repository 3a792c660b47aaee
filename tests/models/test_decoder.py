"""Decoder equivalence tests: our model == transformers (Llama/Qwen2/Qwen3), sharded ==
unsharded, cached decode == full forward, remat/scan/bf16 variants, config errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.core import sharding
from dkd_jax.models import architectures
from dkd_jax.models import decoder as M
from dkd_jax.models import hf as hf_lib
from dkd_jax.models import kv_cache

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LLAMA3_ROPE = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 64,
}
# arch -> (HF class, HF config kwargs); dims differ per arch so each layout is exercised.
TINY = {
  "llama": (
    "LlamaForCausalLM",
    dict(
      vocab_size=96,
      hidden_size=64,
      intermediate_size=96,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=16,
      tie_word_embeddings=True,
      rope_scaling=LLAMA3_ROPE,
    ),
  ),
  "qwen2": (
    "Qwen2ForCausalLM",
    dict(
      vocab_size=96,
      hidden_size=64,
      intermediate_size=96,
      num_attention_heads=4,
      num_key_value_heads=2,
      tie_word_embeddings=False,
    ),
  ),
  "qwen3": (
    "Qwen3ForCausalLM",
    dict(
      vocab_size=96,
      hidden_size=64,
      intermediate_size=96,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=24,
      tie_word_embeddings=True,
    ),
  ),
}


def tiny_hf_model(arch, seed=0):
  """A random tiny HF model whose norms and biases are not at their init values
  (ones/zeros would hide a mis-mapped norm or bias)."""
  cls_name, kw = TINY[arch]
  cls = getattr(transformers, cls_name)
  config = cls.config_class(
    num_hidden_layers=3, rope_theta=5000.0, rms_norm_eps=1e-6, max_position_embeddings=256, **kw
  )
  torch.manual_seed(seed)
  hf = cls(config).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if "norm" in name:
        p.normal_(1.0, 0.1)
      elif name.endswith("bias"):
        p.normal_(0.0, 0.1)
  return hf


def params_of(hf, cfg):
  sd = {k: v.float().numpy() for k, v in hf.state_dict().items()}
  return jax.tree.map(
    jnp.asarray, hf_lib.params_from_hf(cfg, {k: v.shape for k, v in sd.items()}, sd.__getitem__)
  )


@pytest.fixture(scope="module")
def tiny():
  """arch -> (cfg, params, hf model), built once per module."""
  out = {}
  for arch in TINY:
    hf = tiny_hf_model(arch)
    cfg = architectures.config_from_hf(hf.config.to_dict())
    out[arch] = (cfg, params_of(hf, cfg), hf)
  return out


def forward(cfg, params, tokens, positions=None, cache=None):
  graphdef, _ = M.abstract(cfg)
  return M.logits(graphdef, params, tokens, positions, cache)


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("scan", [True, False])
def test_logits_match_transformers(tiny, arch, scan):
  cfg, params, hf = tiny[arch]
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 40))
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  ours, _ = jax.jit(forward, static_argnums=0)(
    dataclasses.replace(cfg, scan_layers=scan), params, jnp.asarray(tokens)
  )
  diff = float(np.abs(np.asarray(ours) - ref).max())
  print(f"{arch} scan={scan}: max abs logit diff vs transformers {diff:.2e}")
  assert diff <= 1e-4


def test_config_from_hf_reads_rope_and_head_dim(tiny):
  assert tiny["llama"][0].rope_scaling == (8.0, 1.0, 4.0, 64)
  assert tiny["qwen3"][0].head_dim == 24 and tiny["qwen3"][0].qk_norm
  assert tiny["qwen2"][0].qkv_bias and not tiny["qwen2"][0].tie_embeddings


# Every dim divides 8, so (1, 1, 8) shards heads, kv heads, mlp and vocab 8 ways.
MESH_CFG = M.ModelConfig(
  arch="qwen2",
  vocab_size=128,
  d_model=64,
  d_ff=128,
  n_layers=2,
  n_heads=8,
  n_kv_heads=8,
  head_dim=8,
  tie_embeddings=False,
)


@pytest.fixture(scope="module")
def mesh_case():
  """(graphdef, params with non-zero biases, tokens, unsharded logits) for MESH_CFG."""
  graphdef, params = M.init_params(MESH_CFG, None, seed=1)
  params["layers"] = dict(
    params["layers"],
    **{
      b: jax.random.normal(jax.random.key(i), params["layers"][b].shape) * 0.1
      for i, b in enumerate(("bq", "bk", "bv"))
    },
  )
  tokens = jax.random.randint(jax.random.key(2), (8, 12), 0, MESH_CFG.vocab_size)
  ref, _ = jax.jit(lambda p, t: M.logits(graphdef, p, t))(params, tokens)
  return graphdef, params, tokens, np.asarray(ref)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 1, 8)])
def test_sharded_forward_equals_unsharded(mesh_case, mesh_shape):
  graphdef, params, tokens, ref = mesh_case
  mesh = sharding.make_mesh(mesh_shape)
  sharded = jax.device_put(params, M.param_shardings(mesh, MESH_CFG))
  tokens_s = jax.device_put(tokens, sharding.batch_sharding(mesh, 2))
  out, _ = jax.jit(lambda p, t: M.logits(graphdef, p, t))(sharded, tokens_s)
  assert out.sharding.mesh.shape == mesh.shape
  np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5, rtol=0)


def test_non_divisible_mesh_is_a_clear_error():
  cfg = dataclasses.replace(MESH_CFG, n_kv_heads=2)
  with pytest.raises(ValueError, match="kv_heads.*does not divide"):
    M.param_shardings(sharding.make_mesh((1, 1, 8)), cfg)


@pytest.mark.parametrize("arch", list(TINY))
def test_cached_decode_equals_full_forward(tiny, arch):
  """Prefill a right-padded batch of prompts of lengths 3 and 6, then decode one
  token at a time at each row's own position; every logit must match the full pass."""
  cfg, params, _ = tiny[arch]
  lengths, steps, S = np.array([3, 6]), 5, 16
  full = jax.random.randint(jax.random.key(3), (2, 6 + steps), 1, cfg.vocab_size)
  ref = np.asarray(jax.jit(forward, static_argnums=0)(cfg, params, full)[0])
  prompt = jnp.where(jnp.arange(6)[None] < lengths[:, None], full[:, :6], 0)
  step = jax.jit(forward, static_argnums=0)
  cache = kv_cache.init_cache(cfg, 2, S)
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  out, cache = step(cfg, params, prompt, pos, cache)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(np.asarray(out)[b, :n], ref[b, :n], atol=1e-4, rtol=0)
  for k in range(steps):
    pos_B = jnp.asarray(lengths + k)
    tok_B = full[jnp.arange(2), pos_B]
    out, cache = step(cfg, params, tok_B[:, None], pos_B[:, None], cache)
    want = ref[np.arange(2), lengths + k]
    np.testing.assert_allclose(np.asarray(out)[:, 0], want, atol=1e-4, rtol=0)


def test_remat_policies_give_same_values_and_grads(tiny):
  cfg, params, _ = tiny["qwen2"]
  tokens = jax.random.randint(jax.random.key(4), (2, 10), 0, cfg.vocab_size)

  def loss_and_grad(c):
    loss = lambda p: jnp.mean(forward(c, p, tokens)[0] ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  ref_loss, ref_grad = loss_and_grad(dataclasses.replace(cfg, remat="none"))
  # Each policy once, scan and loop both covered (every variant costs a grad compile).
  for policy, scan in [("full", True), ("dots", False), ("dots_no_batch", True)]:
    loss, grad = loss_and_grad(dataclasses.replace(cfg, remat=policy, scan_layers=scan))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grad, ref_grad
    )


def test_bf16_compute_is_close_to_fp32(tiny):
  """bf16 activations (8-bit mantissa) over 3 layers: logits within 0.02 absolute of
  fp32 (logits here are of scale ~1; measured 0.004); params stay fp32."""
  cfg, params, _ = tiny["llama"]
  tokens = jax.random.randint(jax.random.key(5), (2, 16), 0, cfg.vocab_size)
  run = jax.jit(forward, static_argnums=0)
  ref, _ = run(cfg, params, tokens)
  out, _ = run(dataclasses.replace(cfg, dtype="bfloat16"), params, tokens)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
  diff = float(jnp.abs(out - ref).max())
  print(f"bf16 vs fp32 max abs logit diff {diff:.3f} (logit max {float(jnp.abs(ref).max()):.2f})")
  assert diff < 0.02


@pytest.mark.parametrize(
  "field,value",
  [
    ("arch", "gpt2"),
    ("remat", "sometimes"),
    ("dtype", "float16"),
    ("vocab_size", 0),
    ("n_layers", 0),
    ("n_heads", 6),
    ("head_dim", 15),
  ],
)
def test_bad_config_values_name_the_field(field, value):
  # 4 kv heads: n_heads=6 cannot group them.
  cfg = dataclasses.replace(M.ModelConfig(n_heads=4, n_kv_heads=4), **{field: value})
  with pytest.raises(ValueError, match=f"model.{field}"):
    cfg.validate()
  with pytest.raises(ValueError, match=f"model.{field}"):
    M.create(cfg)
