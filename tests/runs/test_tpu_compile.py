"""The AOT compile check: the run's functions compiled for a TPU topology (v5e:2x2) from
this CPU machine. Needs libtpu (the `tpu` extra, which CI installs); skipped without it."""

import importlib.util
import math
import os

import jax
import pytest

from configs import rev_student
from dkd_jax.core import platforms
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import hub_shapes
from dkd_jax.runs import tpu_compile as tc

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
  not HAS_LIBTPU,
  reason="libtpu is not installed: the TPU compiler comes with pip install -e '.[tpu]'",
)


def test_topology_names():
  assert tc.parse_topology("v5e:4x4").name == "v5e:4x4"
  assert tc.parse_topology("v5e-16").name == "v5e:4x4"
  assert tc.parse_topology("v5litepod-16").chips == 16
  # v5p and v4 slices count TensorCores: v5p-32 is 16 chips
  assert tc.parse_topology("v5p-32").name == "v5p:2x2x4"
  assert tc.parse_topology("v5p-8").chips == 4
  assert tc.parse_topology("v6e-8").name == "v6e:2x4"
  assert tc.parse_topology("v5e:4x4").slice_name == "v5e-16"
  with pytest.raises(ValueError, match="CHIP"):
    tc.parse_topology("v9z-8")


def test_candidate_meshes_cover_every_factorisation():
  meshes = tc.candidate_meshes(16)
  assert all(math.prod(m) == 16 for m in meshes)
  assert (1, 16, 1) in meshes and (1, 4, 4) in meshes and (16, 1, 1) in meshes
  assert len(set(meshes)) == len(meshes) == 15


def test_search_prunes_meshes_far_over_hbm_after_calibrating():
  """--mesh=auto compiles the first candidate, then skips one whose estimate, scaled by
  the smallest compiled/estimated ratio so far, is above 1.5x HBM (figures of the
  Qwen3 32B->8B top-k row on v5e-16: estimates 52.8 and 58.6 GiB, compiled 29.2)."""
  G, hbm = tc.GiB, int(15.75 * tc.GiB)
  first, second = {"estimated_bytes": 52.8 * G}, {"estimated_bytes": 58.6 * G}
  assert tc.prune_reason(first, None, hbm, tc.PRUNE) is None  # nothing compiled yet
  ratio = tc.calibration(None, first, {"step_peak_bytes": 29.2 * G})
  assert abs(ratio - 29.2 / 52.8) < 1e-9
  assert "not compiled" in tc.prune_reason(second, ratio, hbm, tc.PRUNE)
  assert tc.prune_reason(second, ratio, hbm, 0) is None  # --prune=0: compile every one
  # a near miss keeps its neighbours in the search
  close = tc.calibration(None, first, {"step_peak_bytes": 17.0 * G})
  assert tc.prune_reason(second, close, hbm, tc.PRUNE) is None
  # the calibration only goes down (a refused compile's bytes are a lower bound)
  assert tc.calibration(ratio, second, {"step_peak_bytes": 60 * G}) == ratio


def test_collectives_are_counted_with_their_bytes():
  hlo = "\n".join(
    [
      "  %ag = bf16[8,1024]{1,0} all-gather(bf16[2,1024]{1,0} %p), dimensions={0}",
      "  %ar = (f32[4]{0}, f32[16]{0}) all-reduce(f32[4]{0} %a, f32[16]{0} %b), to_apply=%add",
      "  %rs-start = ((f32[64]{0}), f32[16]{0}) reduce-scatter-start(f32[64]{0} %c)",
      "  %x = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %a)",
    ]
  )
  out = tc.collectives(hlo)
  assert out["all-gather"] == {"count": 1, "bytes": 8 * 1024 * 2}
  assert out["all-reduce"] == {"count": 1, "bytes": (4 + 16) * 4}
  assert out["reduce-scatter"] == {"count": 1, "bytes": 64 * 4}
  assert out["all-to-all"]["count"] == 0


def test_public_qwen3_shapes():
  cfg = hub_shapes.model_config("/ckpt/Qwen3-8B")
  assert (cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads) == (
    36,
    4096,
    12288,
    32,
    8,
  )
  assert not cfg.tie_embeddings and cfg.vocab_size == 151936 and cfg.arch == "qwen3"
  # Qwen3-8B has 8.2B parameters (the model card), 0.6B 0.6B (embedding included)
  n = lambda c: sum(math.prod(s.shape) for s in jax.tree.leaves(model_lib.abstract(c)[1]))
  assert 8.1e9 < n(cfg) < 8.3e9
  assert 0.59e9 < n(hub_shapes.model_config("Qwen/Qwen3-0.6B")) < 0.61e9


def test_cli_platform_choice(monkeypatch):
  """Without TPU chips or GPUs an unset JAX_PLATFORMS becomes cpu; a set one stays."""
  monkeypatch.setenv("JAX_PLATFORMS", "cpu,tpu")
  assert platforms.prefer_cpu_without_accelerator() is None
  assert os.environ["JAX_PLATFORMS"] == "cpu,tpu"
  if platforms.visible_tpu_chips() == 0 and not os.path.exists("/dev/nvidia0"):
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(jax.config, "update", lambda *a: None)  # leave this process alone
    assert platforms.prefer_cpu_without_accelerator() == "cpu"
    assert os.environ["JAX_PLATFORMS"] == "cpu"


@pytest.fixture(scope="module")
def tiny_v5e():
  """rev_student:tiny compiled for v5e:2x2 with FSDP over the 4 chips, and for
  comparison with the params replicated (data parallel)."""
  platforms.compile_only()  # libtpu without its machine-wide lock
  topo = tc.parse_topology("v5e:2x2")
  devices = tc.topology_devices(topo)
  c = rev_student.get_config("tiny")
  fsdp = tc.check(c, topo, (1, 4, 1), devices, only=("train", "rollout"))
  data = tc.check(c, topo, (4, 1, 1), devices, only=("train",))
  mesh = tc.make_mesh((1, 4, 1), devices)
  return c, fsdp, data, mesh


@needs_libtpu
def test_fsdp_params_hold_a_quarter_per_chip(tiny_v5e):
  c, fsdp, data, mesh = tiny_v5e
  shapes = tc.run_shapes(c)
  params = tc.abstract_params(shapes.student, mesh)
  axes = model_lib.param_logical_axes(model_lib.param_shapes(shapes.student))
  replicated = 0
  for x, ax in zip(
    jax.tree.leaves(params), jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))
  ):
    per_chip = tc.shard_bytes([x])
    if "embed" in ax:  # every FSDP-sharded leaf: exactly a quarter on each chip
      assert per_chip * 4 == tc.total_bytes([x]), (ax, x.shape, x.sharding)
    else:
      replicated += per_chip
  total = fsdp["total_bytes"]["student_params"]
  assert tc.shard_bytes(params) == pytest.approx(total / 4 + replicated * 3 / 4)
  assert replicated < 0.05 * total  # only the norm vectors are replicated
  # the train state (params + AdamW moments) a quarter per chip, and so the teacher
  assert fsdp["persistent_bytes"]["train_state"] < 0.27 * fsdp["total_bytes"]["train_state"]
  assert fsdp["persistent_bytes"]["teacher_params"] < 0.27 * fsdp["total_bytes"]["teacher_params"]
  # the compiled step really takes them sharded: its per-chip argument bytes are about
  # half of the replicated layout's (TPU tiles pad this tiny model's 32-wide rows to 128
  # lanes, so not a quarter; replication would read 1.0)
  step, rep = fsdp["functions"]["train_step"], data["functions"]["train_step"]
  assert step["argument_bytes"] < 0.6 * rep["argument_bytes"]
  assert step["argument_bytes_from_shardings"] < 0.3 * rep["argument_bytes_from_shardings"]


@needs_libtpu
def test_train_step_and_decode_loop_compile_once(tiny_v5e):
  """Each compiles once for the run: its loop state comes back in the avals and
  shardings it went in with, so the next call (and every later one) hits the same
  executable; and every function is compiled exactly once in the check."""
  _, fsdp, _, _ = tiny_v5e
  fns = fsdp["functions"]
  names = list(fns)
  assert len(names) == len(set(names))
  for name in ("train_step", "rollout/student/generate_steps", "rollout/student/insert"):
    assert fns[name]["reuses_executable"] is True, name
  for f in fns.values():
    assert f["fits"] and f["peak_bytes"] > 0 and f["argument_bytes"] > 0
  assert fsdp["fits"] and fsdp["step_peak_bytes"] <= fsdp["hbm_bytes"]
  assert fsdp["hbm_bytes"] == int(15.75 * 2**30)  # the compiler's usable v5e HBM
  # FSDP shows as collectives: the step all-gathers the sharded weights
  assert fns["train_step"]["collectives"]["all-gather"]["count"] > 0
  assert fsdp["roofline_s"] > 0 and fsdp["model_flops"] > 0


@needs_libtpu
def test_next_call_lowers_to_the_same_program():
  """The strongest form of 'compiles once': the train step lowered again from its own
  outputs' avals and shardings gives the same program text (the same cache entry)."""
  platforms.compile_only()
  topo = tc.parse_topology("v5e:2x2")
  devices = tc.topology_devices(topo)
  c = rev_student.get_config("tiny")
  mesh = tc.make_mesh((1, 4, 1), devices)
  plan = tc.build(c, tc.run_shapes(c), mesh, only=("train",))
  (fn,) = plan.fns
  first = fn.jitted.lower(*fn.args)
  compiled = first.compile()
  out_state = jax.eval_shape(fn.jitted, *fn.args)[0]
  again = jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
    out_state,
    compiled.output_shardings[0],
  )
  second = fn.jitted.lower(again, *fn.args[1:])
  assert second.as_text() == first.as_text()


@needs_libtpu
def test_fsdp_keeps_the_batch_sharded():
  """Activations are batch-sharded over ('data', 'fsdp'): the train step's temporaries on
  a pure-FSDP mesh match the data-parallel ones. Without `sharding.constrain_batch` XLA
  kept the weights sharded and replicated the batch over 'fsdp' (4.6x the temporaries).
  A student wide enough for TPU tiles (256) so padding does not blur the comparison."""
  platforms.compile_only()
  topo = tc.parse_topology("v5e:2x2")
  devices = tc.topology_devices(topo)
  c = rev_student.get_config("tiny")
  c.data.batch_size, c.data.max_response_len = 64, 112
  c.student.model.update(d_model=256, n_heads=4, n_kv_heads=4, head_dim=64, d_ff=1024, n_layers=4)
  temp = {}
  for mesh in ((4, 1, 1), (1, 4, 1)):
    rep = tc.check(c, topo, mesh, devices, only=("train",))
    temp[mesh] = rep["functions"]["train_step"]["temp_bytes"]
    coll = rep["functions"]["train_step"]["collectives"]
  assert temp[(1, 4, 1)] < 1.3 * temp[(4, 1, 1)], temp
  # FSDP proper: the weights are gathered, the activations not all-reduced
  assert coll["all-gather"]["bytes"] > coll["all-reduce"]["bytes"], coll
