"""`python -m dkd_jax.report`: plots and tables of runs, and the study's steps.

- `RUN_DIR... [--out=DIR]`: the tradeoff plots and table of single runs (`evals.plots`).
- `--study RUN_DIR... --out=DIR [--context=CTX]`: a study's `<arm>_s<seed>` runs: one row
  per arm (seed mean, t-interval over seeds), the declared claims with their seed-level
  tests (claims.md), the figures, and with the context docs/results/study.json.
- `--derive=REF --steps=S --batch=B [--window=W --check_every=C --warm_entropy=H]`: the
  budget, short horizon and remedy settings derived from the teacher's reference
  (`objectives.remedies`), printed as JSON; exit 1 when a check fails.
- `--make_context=CTX --teacher_run=DIR --reference=REF --derived=D --prereg_commit=SHA`:
  the study's context (teacher figures, budget, constant-answer baseline, derived
  settings), written once before any student run.
- `--gates=CTX RUN_DIR...`: the teacher's and the warm starts' competence gates; exit 1
  if one fails (launch/study.sh stops there).
"""

import collections
import json
import sys

from absl import app
from absl import flags

from dkd_jax.core import paths
from dkd_jax.evals import figures
from dkd_jax.evals import plots
from dkd_jax.evals import study
from dkd_jax.objectives import remedies

_OUT = flags.DEFINE_string("out", "report", "Folder for the plots and results.md.")
_STUDY = flags.DEFINE_bool(
  "study",
  False,
  "Runs are a study's <arm>_s<seed> directories: aggregate seeds, intervals, claims.",
)
_CONTEXT = flags.DEFINE_string("context", "", "The study's context JSON (--make_context).")
_DERIVE = flags.DEFINE_string("derive", "", "A teacher reference JSON to derive settings from.")
_STEPS = flags.DEFINE_integer("steps", 0, "Training steps of the runs (--derive).")
_BATCH = flags.DEFINE_integer("batch", 16, "Rollouts per step (--derive).")
_WINDOW = flags.DEFINE_integer("window", 10, "The curriculum gate's window (--derive).")
_CHECK_EVERY = flags.DEFINE_integer("check_every", 10, "Steps between gate checks.")
_WARM_ENTROPY = flags.DEFINE_float("warm_entropy", None, "The warm start's entropy (--derive).")
_MAKE_CONTEXT = flags.DEFINE_string("make_context", "", "Write the study's context here.")
_TEACHER_RUN = flags.DEFINE_string("teacher_run", "", "Run dir with eval_teacher.json.")
_REFERENCE = flags.DEFINE_string("reference", "", "The teacher's reference JSON.")
_DERIVED = flags.DEFINE_string("derived", "", "The derived settings JSON (--derive's output).")
_PREREG = flags.DEFINE_string("prereg_commit", "", "The commit of PREREGISTRATION.md.")
_GATES = flags.DEFINE_string("gates", "", "Check the competence gates against this context.")


def _load(path: str) -> dict:
  return json.loads(paths.as_path(path).read_text())


def derive() -> int:
  ref = remedies.Reference.from_json(_load(_DERIVE.value))
  if _STEPS.value < 1:
    raise app.UsageError("--derive needs --steps (the runs' training steps)")
  try:
    d = remedies.derive(
      ref,
      steps=_STEPS.value,
      batch=_BATCH.value,
      window=_WINDOW.value,
      check_every=_CHECK_EVERY.value,
    )
  except ValueError as e:  # e.g. a budget past the reference's cap
    print(f"configuration error: {e}", file=sys.stderr)
    return 1
  bad = remedies.check(ref, d, batch=_BATCH.value, warm_entropy=_WARM_ENTROPY.value)
  print(json.dumps(d, indent=1))
  for msg in bad:
    print(f"configuration error: {msg}", file=sys.stderr)
  return 1 if bad else 0


def constant_answer_baseline(answers) -> tuple[str, float]:
  """(the most frequent answer, its frequency): what always giving one answer scores."""
  answer, count = collections.Counter(answers).most_common(1)[0]
  return answer, count / len(answers)


def make_context() -> None:
  from dkd_jax.runs import tasks
  from dkd_jax.runs import workdir as run_dir  # config and data: only for this step

  c = run_dir.load_config(_TEACHER_RUN.value)
  _, held_out = tasks.records_for(c)
  # every held-out problem (the teacher's bootstrap run evaluated only a few)
  answer, freq = constant_answer_baseline([r["answer"] for r in held_out])
  derived = _load(_DERIVED.value)
  ctx = {
    "prereg_commit": _PREREG.value,
    "teacher_eval": _load(f"{_TEACHER_RUN.value}/eval_teacher.json"),
    "teacher_reference": {"lengths": _load(_REFERENCE.value)["lengths"]},
    "budget": derived["budget"],
    "short_horizon": derived["short_horizon"],
    "constant_answer": answer,
    "constant_answer_baseline": freq,
    "derived": derived,
  }
  paths.as_path(_MAKE_CONTEXT.value).write_text(json.dumps(ctx, indent=1))
  print(f"wrote {_MAKE_CONTEXT.value}: constant answer {answer!r} scores {freq:.4f}")


def gates(dirs) -> int:
  ctx = _load(_GATES.value)
  arms = study.load_arms(dirs)
  teacher = study.teacher_figures(ctx["teacher_eval"], ctx["teacher_reference"])
  warm = study.warm_start_record(arms)
  g = study.gates(teacher, warm, ctx["budget"], ctx["constant_answer_baseline"], arms)
  print(json.dumps({"teacher": teacher, "warm_start": warm, "gates": g}, indent=1))
  ok = g["teacher"] and g["budget"] and all(g["warm_start"])
  return 0 if ok else 1


def write_study(dirs, out: str, context: dict | None) -> str:
  """results.md, claims.md, the figures and (with a context) study.json into `out`."""
  arms = study.load_arms(dirs)
  if not arms:
    raise FileNotFoundError(f"no finished <arm>_s<seed> runs among {list(dirs)[:5]}")
  out_dir = paths.as_path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  text = study.table(arms)
  results = study.judge(arms)
  claims = study.claims_table(results)
  paper = "\n".join(
    f"- **{g['group']}**: {g['verdict']} (tests {', '.join(g['claims'])}; largest Holm p "
    f"{g['p_holm']:.4f})"
    for g in study.group_verdicts(results)
  )
  (out_dir / "results.md").write_text(text)
  (out_dir / "claims.md").write_text(claims + "\n" + paper + "\n")
  refs = None
  if context is not None:
    record = study.study_record(dirs, context)
    (out_dir / "study.json").write_text(json.dumps(record, indent=1, allow_nan=False))
    refs = figures.references(record)
  figures.plot_all(arms, out, refs)
  return text + "\n" + claims + "\n" + paper + "\n"


def main(argv) -> None:
  dirs = argv[1:]
  if _DERIVE.value:
    sys.exit(derive())
  if _MAKE_CONTEXT.value:
    return make_context()
  if _GATES.value:
    sys.exit(gates(dirs))
  if not dirs:
    raise app.UsageError(
      "give one or more run directories: python -m dkd_jax.report RUN_DIR... [--out=DIR]"
    )
  if _STUDY.value:
    context = _load(_CONTEXT.value) if _CONTEXT.value else None
    print(write_study(dirs, _OUT.value, context))
    print(f"wrote {_OUT.value}/results.md, claims.md, *.png" + (", study.json" if context else ""))
    return
  print(plots.write_report(dirs, _OUT.value))
  print(
    f"wrote {_OUT.value}/accuracy_vs_entropy.png, accuracy_vs_compute.png, horizon.png, results.md"
  )


if __name__ == "__main__":
  app.run(main)
