"""Every function a run jits, compiled ahead of time for a TPU topology from any machine.

`jax.experimental.topologies.get_topology_desc` hands out the devices of a TPU slice
(v5e:4x4 = a v5e-16) without the slice; `jax.jit(f).lower(abstract args).compile()`
then runs the TPU compiler (libtpu, the `tpu` extra) for them. Nothing is allocated:
the run's pieces are `jax.ShapeDtypeStruct`s carrying the run's own shardings, built
from the config the way the run builds them (models' shapes from their config.json, or
from `models.hub_shapes` for a public checkpoint not on disk).

`check(c, topology, mesh)` compiles, for the config's quadrant:
  train_step           the jitted step (`train.jit_train_step`: the teacher forward inside,
                       or the cached top-k variant without a teacher)
  teacher_topk         the teacher forward of the top-k cache pass (cached_topk runs)
  rollout/*            the student engine's decode-params split, batched prefill, insert and
                       decode loop (`generate_steps`) at the rollout batch and length (student
                       prefixes), and the teacher's (teacher rollouts)
  eval/*               the evaluation's engines (k samples per prompt from one prefill), the
                       teacher-response engine and the held-out KL forward
and reports per function and per chip argument, output, temporary and peak bytes against
the chip's HBM, the collectives of the optimised HLO, whether the function's loop state
comes back in the layout it went in (so the run's next call reuses the executable), and
for the whole step `step_peak_bytes`, `model_flops` and `roofline_s`.

What it cannot see (host RAM, the input pipeline, ICI contention, runtime allocator
fragmentation): BUILD_NOTES.md, "AOT compile check".
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.core import sharding
from dkd_jax.evals import harness
from dkd_jax.generate import decode_state
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import hf
from dkd_jax.models import hub_shapes
from dkd_jax.objectives import prefixes
from dkd_jax.runs import configuration
from dkd_jax.runs import pair as pair_lib
from dkd_jax.train import step as train
from dkd_jax.train import teacher_topk

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip public specs: peak dense bf16 FLOP/s, HBM bytes, HBM bandwidth (bytes/s);
  `cores`: TensorCores per chip, the unit of the v4/v5p slice names (v5p-32 = 16 chips)."""

  name: str
  device_kind: str
  peak_flops: float
  hbm_bytes: int
  hbm_bw: float
  cores: int


# Sources (Google Cloud TPU documentation, "System architecture" pages, read 2026):
#   v4  https://cloud.google.com/tpu/docs/v4  : 275 TFLOP/s bf16, 32 GiB HBM2, 1,200 GB/s
#   v5e https://cloud.google.com/tpu/docs/v5e : 197 TFLOP/s bf16, 16 GB HBM2, 819 GB/s
#   v5p https://cloud.google.com/tpu/docs/v5p : 459 TFLOP/s bf16, 95 GB HBM2e, 2,765 GB/s
#   v6e https://cloud.google.com/tpu/docs/v6e : 918 TFLOP/s bf16, 32 GB HBM, 1,640 GB/s
# HBM is taken as GiB (what the runtime reports as bytes_limit is a little less).
CHIPS = {
  "v4": Chip("v4", "TPU v4", 275e12, 32 * GiB, 1200e9, 2),
  "v5e": Chip("v5e", "TPU v5 lite", 197e12, 16 * GiB, 819e9, 1),
  "v5p": Chip("v5p", "TPU v5", 459e12, 95 * GiB, 2765e9, 2),
  "v6e": Chip("v6e", "TPU v6 lite", 918e12, 32 * GiB, 1640e9, 1),
}
# Cloud accelerator-type prefixes (gcloud's acceleratorType) -> chip.
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e", "v4": "v4"}

# Slice topologies by chip count (the shapes Cloud TPU provisions).
_GRIDS_2D = {
  1: "1x1",
  4: "2x2",
  8: "2x4",
  16: "4x4",
  32: "4x8",
  64: "8x8",
  128: "8x16",
  256: "16x16",
}
_GRIDS_3D = {
  4: "2x2x1",
  8: "2x2x2",
  16: "2x2x4",
  32: "2x4x4",
  64: "4x4x4",
  128: "4x4x8",
  256: "4x8x8",
  512: "8x8x8",
}


@dataclasses.dataclass(frozen=True)
class Topology:
  chip: Chip
  name: str  # what get_topology_desc takes, e.g. 'v5e:4x4'
  chips: int

  @property
  def slice_name(self) -> str:
    """The Cloud name of the slice: v5e-16, v5p-32 (TensorCores for v4/v5p)."""
    return f"{self.chip.name}-{self.chips * self.chip.cores}"


def parse_topology(text: str) -> Topology:
  """'v5e:4x4' | 'v5p:2x2x4' (chip:grid) or a slice / accelerator type 'v5e-16',
  'v5litepod-16', 'v5p-32', 'v6e-8', 'v4-32'."""
  text = text.strip().lower()
  if ":" in text:
    kind, grid = text.split(":", 1)
    kind = _ALIASES.get(kind, kind)
    if kind not in CHIPS or not re.fullmatch(r"\d+(x\d+)+", grid):
      raise ValueError(f"--topology={text!r}: expected CHIP:GRID with CHIP in {sorted(CHIPS)}")
    return Topology(CHIPS[kind], f"{kind}:{grid}", math.prod(int(g) for g in grid.split("x")))
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  kind = _ALIASES.get(m.group(1), m.group(1)) if m else None
  if kind not in CHIPS:
    raise ValueError(
      f"--topology={text!r}: expected CHIP:GRID (v5e:4x4) or a slice name (v5e-16, v5p-32) "
      f"with CHIP in {sorted(CHIPS)}"
    )
  chip = CHIPS[kind]
  n = int(m.group(2))
  if n % chip.cores:
    raise ValueError(f"{text}: {chip.name} slices count {chip.cores} TensorCores per chip")
  chips = n // chip.cores
  grids = _GRIDS_3D if kind in ("v4", "v5p") else _GRIDS_2D
  if chips not in grids:
    raise ValueError(f"{text}: no known {kind} topology of {chips} chips; known {sorted(grids)}")
  return Topology(chip, f"{kind}:{grids[chips]}", chips)


def usable_hbm(devices) -> int | None:
  """Bytes of HBM the TPU compiler lets one device's program use (v5e: 15.75 GiB of 16),
  read from its refusal of a program far too large; None if it does not say."""
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel

  mesh = Mesh(np.asarray(devices[:1]), ("x",))
  rep = sharding.replicated(mesh)
  x = _sds((2**40,), jnp.uint8, rep)
  try:
    jax.jit(lambda a: a + 1, out_shardings=rep).lower(x).compile()
  except Exception as e:  # pylint: disable=broad-except
    m = _OOM.search(str(e))
    if m:
      return int(float(m.group("have")) * _UNITS[m.group("u2")])
  return None


def topology_devices(topo: Topology) -> list:
  """The slice's devices as the TPU compiler sees them (no TPU needed)."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  return list(topologies.get_topology_desc(platform="tpu", topology_name=topo.name).devices)


# ----------------------------------------------------------------------------- model shapes


@dataclasses.dataclass
class RunShapes:
  teacher: model_lib.ModelConfig
  student: model_lib.ModelConfig
  sources: dict  # role -> where the shapes came from


def _runtime(cfg, m) -> model_lib.ModelConfig:
  return dataclasses.replace(cfg, dtype=m.dtype, scan_layers=m.scan_layers, remat=m.remat)


def _checkpoint_config(path: str, m, role: str) -> tuple[model_lib.ModelConfig, str]:
  """(ModelConfig, source) of a checkpoint: its config.json when it is on disk (nothing
  else is read), else the public config.json of the hub model its name gives."""
  import os  # pylint: disable=import-outside-toplevel

  if os.path.isfile(os.path.join(path, "config.json")):
    return _runtime(hf.read_config(path), m), f"{path}/config.json"
  if hub_shapes.hub_name(path):
    return _runtime(hub_shapes.model_config(path), m), (
      f"public config.json of {hub_shapes.hub_name(path)}"
    )
  if os.path.exists(path) or path == pair_lib.SMOLLM2_ALIAS:  # a GGUF: convert (read-only)
    d = pair_lib.resolve_checkpoint(path, "/nonexistent", role, read_only=True)
    return _runtime(hf.read_config(d), m), path
  raise FileNotFoundError(
    f"config.{role}.checkpoint={path!r}: no config.json there and not a known public "
    f"checkpoint ({sorted(hub_shapes.CONFIGS)}); give a local HF directory or a hub name"
  )


def run_shapes(c) -> RunShapes:
  """The teacher's and student's ModelConfigs as the run would build them."""
  src = {}
  if c.teacher.checkpoint:
    teacher, src["teacher"] = _checkpoint_config(c.teacher.checkpoint, c.teacher.model, "teacher")
  else:
    teacher, src["teacher"] = configuration.model_config(c.teacher.model, "teacher.model"), "config"
  s = c.student
  if s.init == "checkpoint":
    student, src["student"] = _checkpoint_config(s.checkpoint, s.model, "student")
  elif s.init == "teacher_layers":
    keep = max(int(s.keep_every), 1)
    student = dataclasses.replace(
      _runtime(teacher, s.model), n_layers=len(range(0, teacher.n_layers, keep))
    )
    src["student"] = f"every {keep}th teacher layer"
  else:
    student, src["student"] = configuration.model_config(s.model, "student.model"), "config"
  if teacher.vocab_size != student.vocab_size:
    raise ValueError(f"vocab mismatch: teacher {teacher.vocab_size}, student {student.vocab_size}")
  return RunShapes(teacher, student, src)


# ----------------------------------------------------------------------------- abstract values


def _sds(shape, dtype, shard) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=shard)


def _with(shapes, shardings) -> Any:
  """ShapeDtypeStructs of `shapes` carrying `shardings` (same tree)."""
  return jax.tree.map(lambda s, sh: _sds(s.shape, s.dtype, sh), shapes, shardings)


def abstract_params(cfg, mesh) -> dict:
  _, shapes = model_lib.abstract(cfg)
  return _with(shapes, model_lib.param_shardings(mesh, cfg))


def abstract_batch(mesh, B: int, T: int, k: int = 0) -> dict:
  """The train step's batch (`train.make_batch`, plus the cached top-k when k > 0)."""
  sh = train.batch_shardings(mesh, k > 0)
  key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  out = {
    "tokens": _sds((B, T), jnp.int32, sh["tokens"]),
    "loss_mask": _sds((B, T), jnp.float32, sh["loss_mask"]),
    "student_row": _sds((B,), jnp.bool_, sh["student_row"]),
    "alpha": _sds((), jnp.float32, sh["alpha"]),
    "key": _sds(key.shape, key.dtype, sh["key"]),
  }
  if k:
    out["topk_ids"] = _sds((B, T, k), jnp.int32, sh["topk_ids"])
    out["topk_logp"] = _sds((B, T, k), jnp.float32, sh["topk_logp"])
  return out


def shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def total_bytes(tree) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- the functions


@dataclasses.dataclass
class Fn:
  """One jitted function of the run and the abstract arguments of its call."""

  name: str
  jitted: Any
  args: tuple
  carried: tuple[int, ...] = ()  # argument indices the call returns (loop state)
  out_index: Any = None  # where the carried state sits in the output (None = the output)
  resident: int = 0  # per-chip bytes of its arguments that live all run (params)
  also_live: int = 0  # per-chip bytes live beside the call that are not its arguments


def _rep(mesh) -> jax.sharding.NamedSharding:
  return sharding.replicated(mesh)


def _pow2(n: int) -> int:
  return 1 << (max(int(n), 1) - 1).bit_length()


class EngineFns:
  """The engine's jitted functions for one model, with abstract arguments."""

  def __init__(self, cfg, mesh, *, slots, prompt_len, max_new, params_abs):
    graphdef, _ = model_lib.abstract(cfg)
    self.eng = harness.make_engine(
      cfg,
      graphdef,
      mesh,
      slots=slots,
      max_prompt_len=prompt_len,
      max_new=max_new,
      eos_id=0,
      params_shard=jax.tree.map(lambda x: x.sharding, params_abs),
    )
    self.mesh, self.slots, self.P, self.R = mesh, slots, prompt_len, max_new
    self.params = params_abs
    split = self.eng._jit("decode_params")  # pylint: disable=protected-access
    layers = _with(jax.eval_shape(split, params_abs), self.eng.decode_param_shardings.layers_L)
    self.dp = decode_state.DecodeParams(params_abs, layers)
    init = self.eng._jit("init")  # pylint: disable=protected-access
    self.state = _with(jax.eval_shape(init), self.eng.state_shardings)

  def jit(self, name, *static) -> Any:
    return self.eng._jit(name, *static, params=self.dp)  # pylint: disable=protected-access

  def decode_copy_bytes(self) -> int:
    return shard_bytes(self.dp.layers_L)

  def resident(self) -> int:
    return shard_bytes(self.params)

  def split_fn(self, prefix: str) -> Fn:
    fn = self.eng._jit("decode_params")  # pylint: disable=protected-access
    return Fn(f"{prefix}/decode_params", fn, (self.params,), resident=self.resident())

  def prefill_batch_fn(self, prefix: str, sampler, n: int) -> tuple[Fn, Any]:
    rep, Pb = _rep(self.mesh), self.eng.buckets[-1]
    args = (
      self.dp,
      _sds((n, Pb), jnp.int32, rep),
      _sds((n,), jnp.int32, rep),
      _sds((n, 2), jnp.uint32, rep),
      _sds((n,), jnp.int32, rep),
    )
    fn = self.jit("prefill_batch", sampler)
    live = dict(resident=self.resident(), also_live=shard_bytes(self.state))
    return Fn(f"{prefix}/prefill_batch", fn, args, **live), self._prefix(fn, args)

  def prefill_fn(self, prefix: str, sampler, num_samples: int) -> tuple[Fn, Any]:
    rep, Pb = _rep(self.mesh), self.eng.buckets[-1]
    args = (
      self.dp,
      _sds((1, Pb), jnp.int32, rep),
      _sds((), jnp.int32, rep),
      _sds((2,), jnp.uint32, rep),
      _sds((), jnp.int32, rep),
    )
    fn = self.jit("prefill", sampler, num_samples)
    live = dict(resident=self.resident(), also_live=shard_bytes(self.state))
    return Fn(f"{prefix}/prefill", fn, args, **live), self._prefix(fn, args)

  def _prefix(self, fn, args) -> decode_state.Prefix:
    prefix, _ = jax.eval_shape(fn, *args)
    return _with(prefix, self.eng.prefix_shardings)

  def insert_fn(self, prefix: str, prefix_abs) -> Fn:
    """`Engine.insert_many`: a prefix's samples into M slots in one call (M = the power of
    two `insert_many` pads to: the slots or the prefix's rows, whichever is more)."""
    rep = _rep(self.mesh)
    M = _pow2(prefix_abs.keys_Nx2.shape[0])  # the prefix's rows are >= the slots filled
    ids = _sds((M,), jnp.int32, rep)
    args = (prefix_abs, self.state, ids, ids, _sds((), jnp.int32, rep))
    fn = self.eng._jit("insert_many")  # pylint: disable=protected-access
    return Fn(f"{prefix}/insert", fn, args, carried=(1,), also_live=self.decode_copy_bytes())

  def generate_steps_fn(self, prefix: str, sampler) -> Fn:
    """The decode loop: its step count and stop count are traced (one compile per
    sampler, whatever `sync_every` or the rollout's length)."""
    rep = _rep(self.mesh)
    args = (self.dp, self.state, _sds((), jnp.int32, rep), _sds((), jnp.int32, rep))
    fn = self.jit("generate_steps", sampler)
    return Fn(f"{prefix}/generate_steps", fn, args, carried=(1,), resident=self.resident())

  def rollout_fns(self, prefix: str, sampler, rows: int, samples: int = 1) -> list[Fn]:
    """What `rollout.rollout` compiles: the split, a prefill (batched for one sample per
    prompt, a multisampling prefill otherwise), `insert_many` and the decode loop."""
    if samples == 1:
      pre, prefix_abs = self.prefill_batch_fn(prefix, sampler, _pow2(min(self.slots, rows)))
    else:
      pre, prefix_abs = self.prefill_fn(prefix, sampler, samples)
    return [
      self.split_fn(prefix),
      pre,
      self.insert_fn(prefix, prefix_abs),
      self.generate_steps_fn(prefix, sampler),
    ]


@dataclasses.dataclass
class Plan:
  """Every function of the run for one mesh, and the per-chip persistent bytes."""

  fns: list
  phases: dict  # phase -> list of function names
  persistent: dict  # name -> per-chip bytes
  decode_copy: dict  # engine prefix -> per-chip bytes of its decode copy
  totals: dict  # name -> total (all chips) bytes
  roofline: dict


def quadrant(c) -> dict:
  o, d = c.objective, c.data
  cached = d.teacher_source == prefixes.CACHED_TOPK
  student_rows = {
    "teacher": 0,
    "student": d.batch_size,
    "mixed": int(round(o.student_prefix_frac * d.batch_size)),
  }[o.prefix]
  teacher_rollouts = o.prefix != "student" and d.teacher_source in (
    prefixes.ROLLOUT,
    prefixes.ROLLOUT_CACHED,
  )
  return dict(
    prefix=o.prefix,
    kl=o.kl,
    teacher_source=d.teacher_source,
    cached_topk=cached,
    student_rows=student_rows,
    teacher_rollouts=teacher_rollouts,
  )


def build(c, shapes: RunShapes, mesh, *, only=None, screening=False) -> Plan:
  """The run's functions with abstract arguments for `mesh` (a mesh that does not divide
  a dimension raises ValueError naming it). `screening`: only the bytes and the roofline
  inputs (the mesh search's screen of every candidate); the engine's functions are not
  traced (their prefix's shapes cost a trace of the per-layer prefill, ~60% of a build)."""
  q = quadrant(c)
  B, P, R = c.data.batch_size, c.data.max_prompt_len, c.data.max_response_len
  T = P + R
  s_cfg, t_cfg = shapes.student, shapes.teacher
  s_graphdef, _ = model_lib.abstract(s_cfg)
  t_graphdef, _ = model_lib.abstract(t_cfg)
  optimizer = train.make_optimizer(c.optim, c.train.steps)
  state = train.abstract_state(optimizer, mesh, s_cfg)
  teacher = abstract_params(t_cfg, mesh)
  want = lambda group: only is None or group in only
  fns, phases = [], {"train": [], "rollout": [], "topk": [], "eval": []}
  static = train.StepStatic(
    s_graphdef,
    None if q["cached_topk"] else t_graphdef,
    configuration.kl_spec(c),
    optimizer,
    mesh,
    response_window=R,
  )
  step = train.jit_train_step(
    static, jax.tree.map(lambda x: x.sharding, state), jax.tree.map(lambda x: x.sharding, teacher)
  )
  k = int(c.objective.teacher_top_k) if q["cached_topk"] else 0
  batch = abstract_batch(mesh, B, T, k)
  if want("train"):
    name = "train_step_cached_topk" if q["cached_topk"] else "train_step"
    args = (state, batch, None if q["cached_topk"] else teacher)
    resident = shard_bytes(state) + (0 if q["cached_topk"] else shard_bytes(teacher))
    fns.append(Fn(name, step, args, carried=(0,), out_index=0, resident=resident))
    phases["train"].append(name)
  if q["cached_topk"] and want("topk"):
    tokens = _sds((B, T), jnp.int32, sharding.batch_sharding(mesh, 2))
    fn = teacher_topk._topk_fn(t_graphdef, k, mesh)  # pylint: disable=protected-access
    fns.append(Fn("teacher_topk", fn, (teacher, tokens)))
    phases["topk"].append("teacher_topk")
  decode_copy = {}
  sampler = sampling.Sampler(c.rollout.temperature, c.rollout.top_p, c.rollout.top_k)
  engines = {}

  def engine(role, slots, max_new) -> EngineFns:
    key = (role, slots, max_new)
    if key not in engines:
      cfg, params = (s_cfg, state["params"]) if role == "student" else (t_cfg, teacher)
      engines[key] = EngineFns(
        cfg, mesh, slots=slots, prompt_len=P, max_new=max_new, params_abs=params
      )
    return engines[key]

  if q["student_rows"] and want("rollout"):
    e = engine("student", B, R)
    new = [] if screening else e.rollout_fns("rollout/student", sampler, q["student_rows"])
    fns += new
    phases["rollout"] += [f.name for f in new]
    decode_copy["rollout/student"] = e.decode_copy_bytes()
  if q["teacher_rollouts"] and want("rollout"):
    e = engine("teacher", B, R)
    rows = B - q["student_rows"]
    new = [] if screening else e.rollout_fns("rollout/teacher", sampler, rows)
    fns += new
    phases["rollout"] += [f.name for f in new]
    decode_copy["rollout/teacher"] = e.decode_copy_bytes()
  if want("eval") and not screening:
    fns += _eval_fns(c, s_cfg, t_cfg, s_graphdef, t_graphdef, state["params"], teacher, mesh)
    phases["eval"] = [f.name for f in fns if f.name.startswith("eval/")]
  persistent = {
    "train_state": shard_bytes(state),
    "teacher_params": 0 if q["cached_topk"] else shard_bytes(teacher),
  }
  totals = {
    "student_params": total_bytes(state["params"]),
    "train_state": total_bytes(state),
    "teacher_params": total_bytes(teacher),
  }
  roofline = _roofline_inputs(c, q, shapes, mesh, state, teacher, engines)
  return Plan(fns, phases, persistent, decode_copy, totals, roofline)


def _eval_fns(c, s_cfg, t_cfg, s_graphdef, t_graphdef, s_params, t_params, mesh) -> list:
  """evaluate_run: the student's (and teacher's) k samples per prompt, the teacher's
  reference responses (one batched prefill each) and the held-out KL forward."""
  e = c.eval
  slots = int(e.slots) or c.data.batch_size
  sampler = sampling.Sampler(e.temperature)
  out = []
  kw = dict(slots=slots, prompt_len=c.data.max_prompt_len, max_new=e.max_response_len)
  student = EngineFns(s_cfg, mesh, params_abs=s_params, **kw)
  out += student.rollout_fns("eval/student", sampler, slots, samples=int(e.k))
  teacher = EngineFns(t_cfg, mesh, params_abs=t_params, **kw)
  out += teacher.rollout_fns("eval/teacher_responses", sampler, min(slots, e.kl_problems))
  if e.teacher:
    pre, prefix_abs = teacher.prefill_fn("eval/teacher", sampler, int(e.k))
    out += [pre, teacher.insert_fn("eval/teacher", prefix_abs)]
  pair = pair_lib.Pair(t_cfg, t_graphdef, None, None, s_cfg, s_graphdef, None)
  kl = harness._kl_fn(pair, mesh, c.train.kl_chunk)  # pylint: disable=protected-access
  b2 = sharding.batch_sharding(mesh, 2)
  T = c.data.max_prompt_len + e.max_response_len
  args = (s_params, t_params, _sds((slots, T), jnp.int32, b2), _sds((slots, T), jnp.float32, b2))
  out.append(Fn("eval/heldout_kl", kl, args))
  return out


def n_params(cfg) -> int:
  """Matmul parameters of the blocks (what train.step_flops counts per token)."""
  L, D, F, H, K, Dh = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  return L * (D * (H + 2 * K) * Dh + H * Dh * D + 3 * D * F)


def _roofline_inputs(c, q, shapes, mesh, state, teacher, engines) -> dict:
  """Model FLOPs and the HBM bytes each chip must move at least once per step."""
  B, P, R = c.data.batch_size, c.data.max_prompt_len, c.data.max_response_len
  s, t = shapes.student, shapes.teacher
  tokens = B * (P + R)
  flops = train.step_flops(s, t, tokens)
  if q["cached_topk"]:  # no teacher forward in the step: it ran once in the top-k pass
    flops -= tokens * (2 * n_params(t) + 2 * t.d_model * t.vocab_size)
  tensor = mesh.shape["tensor"]
  s_bytes = total_bytes(state["params"]) / tensor  # a chip's gathered copy (FSDP gathers)
  t_bytes = 0 if q["cached_topk"] else total_bytes(teacher) / tensor
  p_shard = shard_bytes(state["params"])
  # forward, recomputed forward (remat) and backward read the gathered student; the
  # teacher forward reads the teacher; AdamW reads and writes params, m, v; grads once.
  train_bytes = 3 * s_bytes + t_bytes + 2 * shard_bytes(state) + 2 * p_shard
  out = dict(model_flops=float(flops), train_hbm_bytes=float(train_bytes))
  rollout_flops, rollout_bytes = 0.0, 0.0
  for (role, _, _), e in engines.items():
    cfg = s if role == "student" else t
    rows = q["student_rows"] if role == "student" else B - q["student_rows"]
    rollout_flops += 2 * (n_params(cfg) + cfg.d_model * cfg.vocab_size) * rows * (P + R)
    head = total_bytes({"h": e.params.get("lm_head", e.params["embedding"])}) / tensor
    # every decode step reads the decode copy, the head and the whole KV cache
    per_step = e.decode_copy_bytes() + head + shard_bytes(e.state.cache)
    rollout_bytes += R * per_step
  out.update(rollout_flops=float(rollout_flops), rollout_hbm_bytes=float(rollout_bytes))
  return out


# ----------------------------------------------------------------------------- compiling

_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "bf16": 2,
  "f16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
}
_OP = re.compile(
  r"=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>" + "|".join(_COLLECTIVES) + r")(?P<start>-start)?\("
)
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def collectives(hlo_text: str) -> dict:
  """{op: {count, bytes}} of the collectives in optimised HLO text (result bytes; an
  async '-start' counts once with its largest shape). A loop body's ops count once."""
  out = {op: {"count": 0, "bytes": 0} for op in _COLLECTIVES}
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    sizes = [
      math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES.get(dt, 4)
      for dt, dims in _SHAPE.findall(m.group("type"))
      if dt in _DTYPE_BYTES
    ]
    rec = out[m.group("op")]
    rec["count"] += 1
    rec["bytes"] += max(sizes) if m.group("start") else sum(sizes)
  return out


def _round_trip(fn: Fn, lowered, compiled) -> bool | None:
  """True when the loop state the call returns has the avals and shardings it was passed
  with: the run's next call (its output fed back) reuses this executable. The output
  avals come from the lowering (`out_info`), not from tracing the function again."""
  if not fn.carried:
    return None
  out_shapes = lowered.out_info
  out_shard = compiled.output_shardings
  if fn.out_index is not None:
    out_shapes, out_shard = out_shapes[fn.out_index], out_shard[fn.out_index]
  ok = True
  for i in fn.carried:
    ins = jax.tree.leaves(fn.args[i])
    outs, shs = jax.tree.leaves(out_shapes), jax.tree.leaves(out_shard)
    if len(ins) != len(outs):
      return False
    for x, y, sh in zip(ins, outs, shs):
      ok &= x.shape == y.shape and x.dtype == y.dtype
      ok &= x.sharding.is_equivalent_to(sh, len(x.shape))
  return bool(ok)


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_OOM = re.compile(
  r"required for (?P<what>[\w ]+?) \((?P<need>[\d.]+)(?P<u1>[KMGT])\) "
  r"exceeds available HBM \((?P<have>[\d.]+)(?P<u2>[KMGT])\)"
)


def _oom(fn: Fn, err: Exception, t: tuple) -> dict:
  """The report of a function the TPU compiler refused: it does not fit (the compiler
  stops at the first allocation it cannot place, so the bytes are a lower bound)."""
  msg = str(err)
  m = _OOM.search(msg)
  args_b = shard_bytes([a for a in fn.args if a is not None])
  need = float(m.group("need")) * _UNITS[m.group("u1")] if m else 0.0
  have = int(float(m.group("have")) * _UNITS[m.group("u2")]) if m else None
  temp = int(need) if m and "temporaries" in m.group("what") else 0
  return {
    "argument_bytes": args_b,
    "argument_bytes_from_shardings": args_b,
    "output_bytes": 0,
    "alias_bytes": 0,
    "temp_bytes": temp,
    "code_bytes": 0,
    "peak_bytes": int(max(need, args_b + temp)),
    "fits": False,
    "compiler_hbm_bytes": have,
    "compiler_error": msg.splitlines()[0][:400],
    "compiler_flops": 0.0,
    "collectives": {op: {"count": 0, "bytes": 0} for op in _COLLECTIVES},
    "reuses_executable": None,
    "resident_bytes": fn.resident,
    "also_live_bytes": fn.also_live,
    "lower_s": round(t[1] - t[0], 2),
    "compile_s": round(time.perf_counter() - t[1], 2),
  }


def compile_fn(fn: Fn, hbm: int) -> dict:
  t0 = time.perf_counter()
  lowered = fn.jitted.lower(*fn.args)
  t1 = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return _oom(fn, e, (t0, t1))
  t2 = time.perf_counter()
  mem = compiled.memory_analysis()
  arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  alias, temp = int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes)
  code = int(getattr(mem, "generated_code_size_in_bytes", 0))
  peak = arg + out - alias + temp + code
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  return {
    "argument_bytes": arg,
    "argument_bytes_from_shardings": shard_bytes([a for a in fn.args if a is not None]),
    "output_bytes": out,
    "alias_bytes": alias,
    "temp_bytes": temp,
    "code_bytes": code,
    "peak_bytes": peak,
    "fits": peak <= hbm,
    "compiler_flops": float(cost.get("flops", 0.0)),
    "collectives": collectives(compiled.as_text()),
    "reuses_executable": _round_trip(fn, lowered, compiled),
    "resident_bytes": fn.resident,
    "also_live_bytes": fn.also_live,
    "lower_s": round(t1 - t0, 2),
    "compile_s": round(t2 - t1, 2),
  }


def check(
  c,
  topo: Topology,
  mesh_shape,
  devices=None,
  *,
  only=None,
  log=None,
  stop_early=False,
  hbm: int | None = None,
) -> dict:
  """Compiles every function of the run `c` for `topo` on mesh (data, fsdp, tensor)."""
  devices = devices if devices is not None else topology_devices(topo)
  shapes = run_shapes(c)
  mesh = make_mesh(mesh_shape, devices)
  plan = build(c, shapes, mesh, only=only)
  hbm = hbm or device_hbm(topo, devices)
  fns = {}
  for fn in plan.fns:
    if log:
      log(f"compiling {fn.name} for {topo.name} mesh {tuple(mesh_shape)}")
    fns[fn.name] = compile_fn(fn, hbm)
    if stop_early and not fns[fn.name]["fits"] and not fn.name.startswith("eval/"):
      if log:
        log(f"{fn.name} does not fit: the mesh is out, its other functions not compiled")
      break
  return summarise(c, topo, devices, mesh_shape, shapes, plan, fns, hbm)


def make_mesh(shape, devices) -> jax.sharding.Mesh:
  """The run's ('data', 'fsdp', 'tensor') mesh over the topology's devices, laid out
  the way `sharding.resolve_mesh` lays a real slice out (jax.make_mesh)."""
  shape = tuple(int(s) for s in shape)
  if math.prod(shape) != len(devices):
    raise ValueError(
      f"mesh {shape} has {math.prod(shape)} devices; the topology has {len(devices)}"
    )
  try:
    auto = (jax.sharding.AxisType.Auto,) * len(shape)
    return jax.make_mesh(shape, sharding.MESH_AXES, axis_types=auto, devices=devices)
  except Exception:  # pylint: disable=broad-except
    return sharding.make_mesh(shape, devices)


def device_hbm(topo: Topology, devices) -> int:
  """HBM one device may use: the compiler's own limit, else the spec's share."""
  return usable_hbm(devices) or topo.chip.hbm_bytes // (len(devices) // topo.chips)


def _phase_temp(fns, names) -> int:
  """The largest working set of a phase's functions beyond their arguments."""
  return max(
    (fns[n]["peak_bytes"] - fns[n]["argument_bytes"] for n in names if n in fns), default=0
  )


def summarise(c, topo, devices, mesh_shape, shapes, plan, fns, hbm) -> dict:
  n = len(devices)
  peak_rate = topo.chip.peak_flops * topo.chips
  bw = topo.chip.hbm_bw * topo.chips / n  # per device
  persistent = sum(plan.persistent.values())
  train_names, roll_names = plan.phases["train"], plan.phases["rollout"]
  # train phase: the batch and the step's temporaries and outputs beyond the donated state
  extra = lambda f: f["peak_bytes"] - f["resident_bytes"] + f["also_live_bytes"]
  train_b = max((extra(fns[n]) for n in train_names if n in fns), default=0)
  # rollout phase: the decode copy (made once per rollout, freed after it), the decode
  # state and the largest temporaries of the engine's calls
  roll_b = 0
  if roll_names:
    per_engine = {}
    for name in (n for n in roll_names if n in fns):
      prefix = name.rsplit("/", 1)[0]
      per_engine[prefix] = max(per_engine.get(prefix, 0), extra(fns[name]))
    roll_b = max(per_engine.values(), default=0)
  step_peak = persistent + max(train_b, roll_b)
  r = plan.roofline
  train_compute = r["model_flops"] / peak_rate
  train_memory = r["train_hbm_bytes"] / (bw * 1) if bw else 0.0
  roll_compute = r["rollout_flops"] / peak_rate
  roll_memory = r["rollout_hbm_bytes"] / bw if bw else 0.0
  roofline = max(train_compute, train_memory) + max(roll_compute, roll_memory)
  topk_peak = fns["teacher_topk"]["peak_bytes"] if "teacher_topk" in fns else 0
  eval_peak = max((fns[x]["peak_bytes"] for x in plan.phases["eval"] if x in fns), default=0)
  needed = train_names + roll_names + plan.phases["topk"]
  fits = step_peak <= hbm and all(x in fns and fns[x]["fits"] for x in needed)
  return {
    "topology": topo.name,
    "slice": topo.slice_name,
    "chip": topo.chip.name,
    "devices": n,
    "mesh": list(int(x) for x in mesh_shape),
    "quadrant": quadrant(c),
    "teacher": dataclasses.asdict(shapes.teacher),
    "student": dataclasses.asdict(shapes.student),
    "shape_sources": shapes.sources,
    "batch": {
      "batch_size": c.data.batch_size,
      "prompt_len": c.data.max_prompt_len,
      "response_len": c.data.max_response_len,
    },
    "hbm_bytes": hbm,
    "persistent_bytes": plan.persistent,
    "decode_copy_bytes": plan.decode_copy,
    "total_bytes": plan.totals,
    "train_phase_bytes": train_b,
    "rollout_phase_bytes": roll_b,
    "step_peak_bytes": step_peak,
    "step_peak_gib": round(step_peak / GiB, 2),
    "fits": bool(fits),
    "topk_pass_peak_bytes": topk_peak,
    "topk_pass_fits": None if not topk_peak else topk_peak <= hbm,
    "eval_peak_bytes": eval_peak,
    "eval_fits": None if not eval_peak else eval_peak <= hbm,
    "model_flops": r["model_flops"],
    "rollout_flops": r["rollout_flops"],
    "roofline": {
      "train_compute_s": train_compute,
      "train_memory_s": train_memory,
      "rollout_compute_s": roll_compute,
      "rollout_memory_s": roll_memory,
      "peak_bf16_flops_per_chip": topo.chip.peak_flops,
      "hbm_bandwidth_per_chip": topo.chip.hbm_bw,
    },
    "roofline_s": roofline,
    "functions": fns,
    # per function, the collectives its optimised HLO holds (ops with none left out)
    "collectives": {
      name: {op: v for op, v in f["collectives"].items() if v["count"]} for name, f in fns.items()
    },
    "compile_s": round(sum(f["lower_s"] + f["compile_s"] for f in fns.values()), 1),
  }


# ----------------------------------------------------------------------------- mesh search


def candidate_meshes(n: int) -> list[tuple[int, int, int]]:
  out = []
  for t in range(1, n + 1):
    if n % t:
      continue
    for d in range(1, n // t + 1):
      if (n // t) % d == 0:
        out.append((d, n // t // d, t))
  return out


def screen(c, shapes, mesh_shape, devices, hbm) -> dict:
  """Without compiling: does the mesh divide every dimension, how many bytes of
  persistent state each chip holds, and the analytic roofline (the search's order)."""
  try:
    mesh = make_mesh(mesh_shape, devices)
    plan = build(c, shapes, mesh, only=("train", "rollout", "topk"), screening=True)
  except ValueError as e:
    return {"mesh": list(mesh_shape), "status": f"invalid: {e}"}
  persistent = sum(plan.persistent.values()) + max(plan.decode_copy.values(), default=0)
  r, n = plan.roofline, len(devices)
  return {
    "mesh": list(mesh_shape),
    "persistent_bytes": persistent,
    "estimated_bytes": persistent + activation_bytes(c, shapes.student, mesh),
    "status": "candidate" if persistent < hbm else "persistent state exceeds HBM",
    "analytic": r,
    "n": n,
  }


def activation_bytes(c, cfg, mesh) -> int:
  """A rough per-chip estimate of what the student's backward keeps (orders the mesh
  search only; the compiler's numbers are the ones reported): the remat policy's saved
  tensors for every layer, plus one layer's fp32 attention scores."""
  t = mesh.shape["tensor"]
  rows = c.data.batch_size / (mesh.shape["data"] * mesh.shape["fsdp"])
  tokens = rows * (c.data.max_prompt_len + c.data.max_response_len)
  D, F, HD, KD = cfg.d_model, cfg.d_ff, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  per = {
    "none": 6 * D + (3 * HD + 4 * KD + 4 * F) / t,
    "dots": 2 * D + (HD + 2 * KD + 2 * F) / t,
    "dots_no_batch": 2 * D + (HD + 2 * KD + 2 * F) / t,
    "full": D,
  }[cfg.remat]
  item = jnp.dtype(cfg.dtype).itemsize
  T = c.data.max_prompt_len + c.data.max_response_len
  scores = rows * cfg.n_heads / t * T * T * 4
  # x1.5: fitted on the 15 compiles of the README table's first rows (Qwen3 pairs on
  # v5e-16 and v5p-8; (compiled step peak - persistent bytes) / the count above: median
  # 1.44, range 1.15-2.0). It was x3, fitted on one compile before `constrain_batch`
  # (BUILD_NOTES): it then sorted meshes that fit behind worse ones.
  return int(1.5 * (cfg.n_layers * tokens * per * item + 3 * scores))


PRUNE = 1.5  # skip a mesh whose calibrated estimate is above this many times the HBM


def calibration(ratio: float | None, screened: dict, rep: dict) -> float | None:
  """The smallest compiled / estimated step peak so far. A mesh compiled only up to a
  refused function has a step peak that is a lower bound, so the ratio errs low (the
  pruning it drives errs towards compiling)."""
  est = screened.get("estimated_bytes") or 0
  if est <= 0:
    return ratio
  r = rep["step_peak_bytes"] / est
  return r if ratio is None else min(ratio, r)


def prune_reason(screened: dict, ratio: float | None, hbm: int, prune: float) -> str | None:
  """Why a candidate is not compiled: its estimate, scaled by the calibration of the
  meshes compiled before it, is more than `prune` x HBM (None: compile it)."""
  if not prune or ratio is None:
    return None
  guess = ratio * screened["estimated_bytes"]
  if guess <= prune * hbm:
    return None
  return (
    f"not compiled: estimated {guess / GiB:.1f} GiB (x{ratio:.2f}, calibrated on the "
    f"meshes compiled) > {prune:g} x HBM"
  )


def search(
  c, topo: Topology, *, max_fits: int = 0, only=None, log=None, prune: float = PRUNE
) -> dict:
  """--mesh=auto: every (data, fsdp, tensor) the topology allows, screened, then compiled
  in order of their analytic roofline; returns the fitting ones best roofline first.

  A train-step compile of a large pair takes minutes of CPU, and most candidates of a
  slice that is too small are far over its HBM: after each compile the rough activation
  estimate is calibrated (`calibration`) and a mesh whose calibrated estimate is above
  `prune` x HBM is reported as not compiled (`prune_reason`; 0 compiles every one). On
  the compiles recorded so far the estimate's error across meshes was within 0.8-1.35x
  of the calibration, inside the 1.5x margin."""
  devices = topology_devices(topo)
  n = len(devices)
  hbm = device_hbm(topo, devices)
  shapes = run_shapes(c)
  peak_rate, bw = topo.chip.peak_flops * topo.chips, topo.chip.hbm_bw * topo.chips / n

  def analytic_s(s) -> float:
    a = s["analytic"]
    return max(a["model_flops"] / peak_rate, a["train_hbm_bytes"] / bw) + max(
      a["rollout_flops"] / peak_rate, a["rollout_hbm_bytes"] / bw
    )

  screened = [screen(c, shapes, m, devices, hbm) for m in candidate_meshes(n)]
  # likely fits (by the estimate) first, best analytic roofline first; then the rest,
  # smallest estimate first
  todo = sorted(
    (s for s in screened if s["status"] == "candidate"),
    key=lambda s: (
      s["estimated_bytes"] > hbm,
      analytic_s(s) if s["estimated_bytes"] <= hbm else s["estimated_bytes"],
    ),
  )
  results, ratio = [], None
  for s in todo:
    if max_fits and sum(r["fits"] for r in results) >= max_fits:
      s["status"] = "not compiled (enough fitting meshes found)"
      continue
    why = prune_reason(s, ratio, hbm, prune)
    if why:
      s["status"] = why
      if log:
        log(f"mesh {tuple(s['mesh'])}: {why}")
      continue
    try:
      rep = check(c, topo, s["mesh"], devices, only=only, log=log, stop_early=True, hbm=hbm)
    except ValueError as e:  # a shape only the engine's trace finds the mesh cannot divide
      s["status"] = f"invalid: {e}"
      continue
    s["status"] = "fits" if rep["fits"] else "does not fit"
    s["step_peak_gib"] = rep["step_peak_gib"]
    results.append(rep)
    ratio = calibration(ratio, s, rep)
  fitting = sorted((r for r in results if r["fits"]), key=lambda r: r["roofline_s"])
  best = (
    fitting[0]
    if fitting
    else (min(results, key=lambda r: r["step_peak_bytes"]) if results else None)
  )
  for s in screened:
    s.pop("analytic", None)
    s.pop("n", None)
  return {
    "topology": topo.name,
    "slice": topo.slice_name,
    "fits": bool(fitting),
    "best": best,
    "fitting": [
      {"mesh": r["mesh"], "roofline_s": r["roofline_s"], "step_peak_gib": r["step_peak_gib"]}
      for r in fitting
    ],
    "candidates": screened,
  }


def row(rep: dict) -> dict:
  """The README table's fields of one report (a check's or the best of a search)."""
  best = rep.get("best", rep) if "candidates" in rep else rep
  if best is None:
    return {"slice": rep["slice"], "fits": False, "mesh": None, "gib": None, "roofline_s": None}
  return {
    "slice": best["slice"],
    "fits": bool(best["fits"]),
    "mesh": best["mesh"],
    "gib": best["step_peak_gib"],
    # a function the compiler refused gives the bytes of its first failed allocation only
    "gib_is_lower_bound": any("compiler_error" in f for f in best["functions"].values()),
    "hbm_gib": round(best["hbm_bytes"] / GiB, 1),
    "roofline_s": best["roofline_s"],
  }
