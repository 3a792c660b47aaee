"""`python -m dkd_jax.aot --config=CONFIG --topology=v5e:4x4 [--mesh=d,f,t|auto]`: will the
run fit a TPU slice, and how fast could it go? Answered on any machine, before renting one.

Every function the run jits (the train step of the config's quadrant, the teacher's top-k
pass, the engine's prefill, insert and decode loop at the rollout batch and length, the
evaluation's engines and KL forward) is compiled by the TPU compiler for the topology's
devices from abstract values (no weights read or allocated; `runs.tpu_compile`). Printed
per function and per chip: argument, output, temporary and peak bytes against HBM and
`fits`, the collectives of the optimised HLO; for the step: `step_peak_bytes`,
`model_flops`, `roofline_s`. The last line of stdout is one JSON object.

  --topology   v5e:4x4, v5p:2x2x4, v6e:2x4 (chip:grid) or a slice name: v5e-16,
               v5litepod-16, v5p-32, v6e-8, v4-32.
  --mesh       d,f,t (data, fsdp, tensor); -1 takes the devices left; `auto` tries
               every shape the topology allows (screened, then compiled in order of
               their analytic roofline) and reports those that fit, best roofline first.
               Default: the config's `mesh` (its -1 resolved on the topology).
  --only       train,rollout,topk,eval: compile only these groups.
  --max_fits   with --mesh=auto, stop after this many fitting meshes (0 = try all).
  --prune      with --mesh=auto, do not compile a mesh whose activation estimate, calibrated
               on the meshes compiled before it, is above this many times the HBM
               (default 1.5; 0 compiles every candidate).
  --out        also write the JSON object to this file.
  --require_fit  exit status 3 when the run does not fit (launch/run_tpu_vm.sh).

Needs libtpu (`pip install -e ".[tpu]"`). JAX itself runs on the CPU here, and libtpu is
loaded without its lock, so the check runs beside a training job, even on a TPU VM.
"""

from dkd_jax.core import platforms

platforms.compile_only()  # before JAX starts: CPU backend, libtpu only for its compiler

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:4x4", "TPU topology (v5e:4x4) or slice (v5e-16).")
_MESH = flags.DEFINE_string("mesh", None, "d,f,t | auto (default: the config's mesh).")
_ONLY = flags.DEFINE_list("only", None, "Groups to compile: train, rollout, topk, eval.")
_MAX_FITS = flags.DEFINE_integer("max_fits", 0, "--mesh=auto: stop after this many fit.")
_PRUNE = flags.DEFINE_float("prune", 1.5, "--mesh=auto: skip meshes estimated > this x HBM.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON object here.")
_REQUIRE_FIT = flags.DEFINE_bool("require_fit", False, "Exit 3 when the run does not fit.")

GROUPS = ("train", "rollout", "topk", "eval")


def _gib(b) -> str:
  return f"{b / 2**30:7.2f}"


def _mesh_shape(text, config_mesh, n: int) -> tuple[int, int, int]:
  shape = [int(x) for x in (text.split(",") if text else config_mesh)]
  if len(shape) != 3:
    raise app.UsageError(f"--mesh={text!r}: three sizes (data, fsdp, tensor) or 'auto'")
  if shape.count(-1) > 1:
    raise app.UsageError(f"mesh {shape}: at most one -1")
  if -1 in shape:
    rest = 1
    for s in shape:
      rest *= s if s != -1 else 1
    shape[shape.index(-1)] = max(n // rest, 1)
  return tuple(shape)


def print_report(rep: dict, out=sys.stdout) -> None:
  """The human-readable part: one line per function, then the step."""
  p = lambda *a: print(*a, file=out)
  p(
    f"{rep['slice']} ({rep['topology']}, {rep['devices']} devices), mesh (data, fsdp, tensor) = "
    f"{tuple(rep['mesh'])}, HBM {_gib(rep['hbm_bytes']).strip()} GiB per chip"
  )
  p(
    f"{'function':44s} {'args':>7s} {'out':>7s} {'temp':>7s} {'peak':>7s} GiB  fits  compile"
    "  collectives"
  )
  for name, f in rep["functions"].items():
    coll = ", ".join(
      f"{op} {v['count']}x{_gib(v['bytes']).strip()}G"
      for op, v in f["collectives"].items()
      if v["count"]
    )
    p(
      f"{name:44s} {_gib(f['argument_bytes'])} {_gib(f['output_bytes'])} {_gib(f['temp_bytes'])} "
      f"{_gib(f['peak_bytes'])}      {'yes' if f['fits'] else 'NO ':3s} {f['compile_s']:6.1f}s  "
      f"{coll or '-'}"
    )
  per = rep["persistent_bytes"]
  p(
    f"persistent: train state {_gib(per['train_state']).strip()} GiB + teacher params "
    f"{_gib(per['teacher_params']).strip()} GiB; rollout phase (decode copy, decode state, "
    f"temporaries) {_gib(rep['rollout_phase_bytes']).strip()} GiB; train phase "
    f"{_gib(rep['train_phase_bytes']).strip()} GiB"
  )
  r = rep["roofline"]
  p(
    f"step_peak {rep['step_peak_gib']} GiB of {_gib(rep['hbm_bytes']).strip()} -> "
    f"{'FITS' if rep['fits'] else 'DOES NOT FIT'}; model_flops {rep['model_flops']:.3g} "
    f"(+ rollout {rep['rollout_flops']:.3g}); roofline {rep['roofline_s']:.3f} s/step "
    f"(train compute {r['train_compute_s']:.3f} / memory {r['train_memory_s']:.3f}, "
    f"rollout compute {r['rollout_compute_s']:.3f} / memory {r['rollout_memory_s']:.3f})"
  )
  if rep["topk_pass_fits"] is not None:
    p(
      f"top-k pass peak {rep['topk_pass_peak_bytes'] / 2**30:.2f} GiB: fits={rep['topk_pass_fits']}"
    )
  if rep["eval_fits"] is not None:
    p(f"evaluation peak {rep['eval_peak_bytes'] / 2**30:.2f} GiB: fits={rep['eval_fits']}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from dkd_jax.runs import configuration  # noqa: PLC0415  (after platforms.compile_only)
  from dkd_jax.runs import tpu_compile  # noqa: PLC0415

  c = _CONFIG.value
  configuration.validate(c)
  only = tuple(_ONLY.value) if _ONLY.value else None
  if only and set(only) - set(GROUPS):
    raise app.UsageError(f"--only={only}: groups are {GROUPS}")
  topo = tpu_compile.parse_topology(_TOPOLOGY.value)
  try:
    devices = tpu_compile.topology_devices(topo)
  except Exception as e:  # noqa: BLE001  (libtpu absent or too old)
    raise app.UsageError(
      f"cannot describe TPU topology {topo.name}: {e}\n"
      'the TPU compiler comes with libtpu: pip install -e ".[tpu]"'
    ) from None
  log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  if (_MESH.value or "").strip() == "auto":
    result = tpu_compile.search(
      c, topo, max_fits=_MAX_FITS.value, only=only, log=log, prune=_PRUNE.value
    )
    for s in result["candidates"]:
      extra = f" {s['step_peak_gib']} GiB" if "step_peak_gib" in s else ""
      print(f"mesh {tuple(s['mesh'])}: {s['status']}{extra}")
    if result["best"] is not None:
      print_report(result["best"])
    print(
      "fitting meshes, best roofline first: "
      + (
        "; ".join(f"{tuple(f['mesh'])} {f['roofline_s']:.3f} s" for f in result["fitting"])
        or "none"
      )
    )
    fits = result["fits"]
  else:
    shape = _mesh_shape(_MESH.value, c.mesh, len(devices))
    result = tpu_compile.check(c, topo, shape, devices, only=only, log=log)
    print_report(result)
    fits = result["fits"]
  result["row"] = tpu_compile.row(result)
  result["wall_s"] = round(time.perf_counter() - t0, 1)
  text = json.dumps(result, default=str)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
  print(text, flush=True)
  if _REQUIRE_FIT.value and not fits:
    sys.exit(3)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
