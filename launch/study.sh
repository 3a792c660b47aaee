#!/usr/bin/env bash
# The third study (issue 22), exactly as docs/results/PREREGISTRATION.md declares it and
# dkd_jax/evals/preregistration.py encodes it. Run it from a frozen, committed tree:
#
#   launch/study.sh [OUT=runs/study3] [RESULTS=docs/results]
#   DRY=1 launch/study.sh OUT      # print what would run; run nothing
#   STOP_AFTER=teacher launch/study.sh OUT  # stop once the teacher gate passes (steps 1-3)
#   STOP_AFTER=gates launch/study.sh OUT    # stop once every competence gate passes (1-5)
#
# Steps, each skipped when its output exists (a killed study resumes where it stopped;
# an interrupted run resumes from its last checkpoint):
#   1. the teacher (declared recipe, bootstrapped once in OUT/_teacher);
#   2. its frozen reference rollouts (OUT/teacher_reference.json) and, from them by the
#      rules of dkd_jax/objectives/remedies.py, the budget, the short horizon and every
#      remedy threshold (OUT/derived.json; a configuration error stops the study);
#   3. the teacher's evaluation at the budget, and the context (OUT/context.json);
#   4. the warm start: its SFT steps calibrated on seed 0 along the declared ladder, then
#      every seed's warm_start_s<seed> (evaluated before any distillation);
#   5. the competence gates (teacher, budget, warm starts): a failure stops the study;
#   6. the arms x seeds; 7. the report (RESULTS/results.md, claims.md, study.json, plots;
#      each run's small files kept in RESULTS/runs3).
# RL after distillation is launch/rl_study.sh OUT (run after this script).
set -euo pipefail
OUT=${1:-runs/study3}; RESULTS=${2:-docs/results}
cd "$(dirname "$0")/.."
DRY=${DRY:-}
STOP_AFTER=${STOP_AFTER:-}
case "$STOP_AFTER" in
  ""|teacher|gates) ;;
  *) echo "STOP_AFTER must be teacher or gates, not '$STOP_AFTER'" >&2; exit 2 ;;
esac
PLAN="from dkd_jax.evals import preregistration as p"
SEEDS=$(python -c "$PLAN; print(*p.SEEDS)")
STEPS=$(python -c "$PLAN; print(p.STEPS)")
AT_STEPS=$(python -c "$PLAN; print('(' + ','.join(map(str, p.eval_steps()[:-1])) + ',)')")
CURVE=$(python -c "$PLAN; print(p.CURVE_PROBLEMS)")
mkdir -p "$OUT"

# --- the declared task and teacher recipe (PREREGISTRATION.md "Task" and "Teacher") ---
DATA_MAX=192      # the data window: budget <= 192 (the teacher's cache key depends on it)
REF_CAP=240       # reference rollouts run past any budget the rules can give
TASK_DATA=(--config.data.chain.min_ops=2 --config.data.chain.max_ops=3
           --config.data.max_response_len=$DATA_MAX)
TASK=("${TASK_DATA[@]}" --config.eval.num_problems=1000 --config.eval.k=8)
TEACHER_LADDER=("--config.teacher.bootstrap_steps=6000"
                "--config.teacher.bootstrap_steps=12000")
# The warm start is issue 20's `student.init='warm_start'`; its SFT steps are calibrated.
WARM_LADDER=(100 200 400 800 1600)

run_cmd() { if [ -n "$DRY" ]; then echo "would run: $*"; else "$@"; fi; }
if [ -z "$DRY" ] && ! git diff --quiet HEAD -- dkd_jax configs launch; then
  echo "the tree has uncommitted changes under dkd_jax/ configs/ launch/: commit first" >&2
  exit 1
fi
PREREG=$(git log -1 --format=%H -- docs/results/PREREGISTRATION.md)
if [ -z "$PREREG" ]; then
  [ -n "$DRY" ] || { echo "PREREGISTRATION.md is not committed" >&2; exit 1; }
  PREREG=uncommitted
fi

# 1. the teacher: the first rung of the ladder whose teacher passes the teacher gate
teacher_rung() { cat "$OUT/teacher_rung" 2>/dev/null || echo 0; }
TEACHER=(${TEACHER_LADDER[$(teacher_rung)]})
teacher_dir() { echo "$OUT/_teacher$(teacher_rung)"; }
bootstrap_teacher() {
  local dir; dir=$(teacher_dir)
  [ -f "$dir/teacher/teacher_meta.json" ] && return 0
  mkdir -p "$dir"
  run_cmd python -m dkd_jax.launch --config=configs/fwd_teacher.py:chain --workdir="$dir" \
    "${TASK_DATA[@]}" "${TEACHER[@]}" --config.train.steps=1 --config.eval.num_problems=8 \
    --config.eval.k=1 --config.eval.teacher=False
}
evaluate_teacher() {  # its reference rollouts, then its evaluation at the budget
  local dir; dir=$(teacher_dir)
  [ -f "$dir/reference.json" ] || run_cmd python -m dkd_jax.evaluate --workdir="$dir" \
    --teacher --reference="$dir/reference.json" --reference_cap=$REF_CAP
  if [ -n "$DRY" ]; then
    echo "would run: python -m dkd_jax.report --derive=$dir/reference.json --steps=$STEPS"
    return 0
  fi
  [ -f "$dir/derived.json" ] || {
    python -m dkd_jax.report --derive="$dir/reference.json" --steps="$STEPS" --batch=16 \
      > "$dir/derived.json.tmp" && mv "$dir/derived.json.tmp" "$dir/derived.json"; }
  BUDGET=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['budget'])" \
    "$dir/derived.json")
  [ "$BUDGET" -le "$DATA_MAX" ] || { echo "budget $BUDGET > data window $DATA_MAX" >&2; exit 1; }
  [ -f "$dir/eval_teacher_budget.json" ] || {
    python -m dkd_jax.evaluate --workdir="$dir" --teacher --budget="$BUDGET" \
      --config=configs/fwd_teacher.py:chain "${TASK[@]}" "${TEACHER[@]}" \
      --config.eval.max_response_len="$BUDGET" --config.eval.slots=128
    cp "$dir/eval_teacher.json" "$dir/eval_teacher_budget.json"; }
  cp "$dir/eval_teacher_budget.json" "$dir/eval_teacher.json"
  python -m dkd_jax.report --make_context="$dir/context.json" --teacher_run="$dir" \
    --reference="$dir/reference.json" --derived="$dir/derived.json" --prereg_commit="$PREREG"
}
teacher_ok() {  # the teacher and budget gates (no warm start given yet)
  python -m dkd_jax.report --gates="$(teacher_dir)/context.json" > "$OUT/teacher_gate.json"
}
while :; do
  bootstrap_teacher
  evaluate_teacher
  [ -n "$DRY" ] && break
  teacher_ok && break
  next=$(( $(teacher_rung) + 1 ))
  [ "$next" -lt "${#TEACHER_LADDER[@]}" ] || { echo "no teacher rung passes the gate" >&2; exit 1; }
  echo "$next" > "$OUT/teacher_rung"; TEACHER=(${TEACHER_LADDER[$next]})
done
if [ "$STOP_AFTER" = teacher ]; then
  echo "stopped after the teacher gate (STOP_AFTER=teacher)"; exit 0
fi
T=$(teacher_dir)
val() { python -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(eval(sys.argv[2], {}, d))" "$T/derived.json" "$1"; }
if [ -n "$DRY" ] && [ ! -f "$T/derived.json" ]; then
  BUDGET=128; SHORT=40; CUR=(--config.curriculum.enabled=True); TARGET=0.3
else
  BUDGET=$(val budget); SHORT=$(val short_horizon); TARGET=$(val "adaptive['target_entropy']")
  CUR=(--config.curriculum.enabled=True --config.curriculum.reference=absolute
       "--config.curriculum.lengths=$(val "tuple(curriculum['lengths'])")"
       "--config.curriculum.stage_max_truncation=$(val "tuple(curriculum['stage_max_truncation'])")"
       --config.curriculum.gate_entropy="$(val "curriculum['gate_entropy']")"
       --config.curriculum.floor_entropy="$(val "curriculum['floor_entropy']")"
       --config.curriculum.min_steps="$(val "curriculum['min_steps']")"
       --config.curriculum.check_every="$(val "curriculum['check_every']")"
       --config.curriculum.window="$(val "curriculum['window']")")
fi
# A flag given twice keeps its FIRST value (absl config flags), so no run repeats one:
# the warm start's single step takes EVAL_BASE and no evaluation points (NO_CURVE=1).
EVAL_BASE=(--config.eval.max_response_len="$BUDGET" --config.eval.slots=128
           --config.eval.curve_problems="$CURVE")
EVAL=("${EVAL_BASE[@]}" "--config.eval.at_steps=$AT_STEPS")

# 4. the warm start, then 6. the arms: each run gets the shared teacher (and its seed's
# warm start) copied in, so neither is recomputed.
run() {  # run DIR CONFIG SEED STEPS [overrides...]
  local dir=$1 cfg=$2 seed=$3 steps=$4; shift 4
  [ -f "$dir/summary.json" ] && { echo "done already: $dir"; return 0; }
  if [ -z "$DRY" ]; then
    mkdir -p "$dir"
    [ -d "$dir/teacher" ] || cp -r "$T/teacher" "$dir/"
    local warm="$OUT/warm_start_s$seed/student_warm_start"
    [ -d "$warm" ] && [ ! -d "$dir/student_warm_start" ] && cp -r "$warm" "$dir/"
  fi
  local cmd=(python -m dkd_jax.launch --config="configs/$cfg:chain" --workdir="$dir"
    --config.seed="$seed" --config.train.steps="$steps" --config.eval.teacher=False
    "${TASK[@]}" "${TEACHER[@]}" "${WARM[@]}" "${EVAL[@]}" "$@")
  [ -n "${NO_CURVE:-}" ] && cmd=(python -m dkd_jax.launch --config="configs/$cfg:chain"
    --workdir="$dir" --config.seed="$seed" --config.train.steps="$steps"
    --config.eval.teacher=False "${TASK[@]}" "${TEACHER[@]}" "${WARM[@]}" "${EVAL_BASE[@]}"
    --config.eval.at_steps="()" "$@")
  if [ -n "$DRY" ]; then echo "would run: ${cmd[*]}"; return 0; fi
  "${cmd[@]}" > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; return 1; }
  echo "done: $dir"
}
warm_start() {  # warm_start DIR SEED: the start itself (1 step; its lr is 0: warmup from 0)
  NO_CURVE=1 run "$1" rev_student.py "$2" 1
}
WARM_STEPS=$(cat "$OUT/warm_steps" 2>/dev/null || true)
if [ -z "$WARM_STEPS" ]; then
  for w in "${WARM_LADDER[@]}"; do
    WARM=(--config.student.init=warm_start --config.student.warm_start.steps="$w")
    warm_start "$OUT/_warm_calibration/w$w/warm_start_s0" 0
    [ -n "$DRY" ] && { WARM_STEPS=$w; break; }
    if python -m dkd_jax.report --gates="$T/context.json" \
        "$OUT/_warm_calibration/w$w/warm_start_s0" > "$OUT/_warm_calibration/w$w.json"; then
      WARM_STEPS=$w; echo "$w" > "$OUT/warm_steps"; break
    fi
  done
  [ -n "$WARM_STEPS" ] || { echo "no warm-start rung passes the gate on seed 0" >&2; exit 1; }
fi
WARM=(--config.student.init=warm_start --config.student.warm_start.steps="$WARM_STEPS")
if [ -z "$DRY" ] && [ ! -d "$OUT/warm_start_s0" ]; then  # seed 0's is the calibrated one
  cp -r "$OUT/_warm_calibration/w$WARM_STEPS/warm_start_s0" "$OUT/"
  cp "$OUT/_warm_calibration/w$WARM_STEPS/warm_start_s0.log" "$OUT/"
fi
for seed in $SEEDS; do warm_start "$OUT/warm_start_s$seed" "$seed"; done
if [ -z "$DRY" ]; then
  python -m dkd_jax.report --gates="$T/context.json" "$OUT"/warm_start_s*/ > "$OUT/gates.json" \
    || { echo "a competence gate fails: $OUT/gates.json" >&2; exit 1; }
fi
if [ "$STOP_AFTER" = gates ]; then  # no student distillation arm has run
  echo "stopped after the competence gates (STOP_AFTER=gates)"; exit 0
fi

LONG=(--config.train.horizon="$BUDGET")
for seed in $SEEDS; do
  run "$OUT/fwd_teacher_s$seed" fwd_teacher.py "$seed" "$STEPS" "${LONG[@]}"
  run "$OUT/rev_teacher_s$seed" rev_teacher.py "$seed" "$STEPS" "${LONG[@]}"
  run "$OUT/fwd_student_s$seed" fwd_student.py "$seed" "$STEPS" "${LONG[@]}"
  run "$OUT/rev_student_s$seed" rev_student.py "$seed" "$STEPS" "${LONG[@]}"
  run "$OUT/rev_student_short_s$seed" rev_student.py "$seed" "$STEPS" \
    --config.train.horizon="$SHORT"
  run "$OUT/mix_a50_s$seed" kl_mix.py "$seed" "$STEPS" "${LONG[@]}" \
    --config.objective.alpha_schedule.kind=constant --config.objective.alpha=0.5
  run "$OUT/curriculum_s$seed" rev_student.py "$seed" "$STEPS" "${LONG[@]}" "${CUR[@]}"
  run "$OUT/mix_adaptive_s$seed" kl_mix.py "$seed" "$STEPS" "${LONG[@]}" \
    --config.objective.alpha=0.0 --config.objective.alpha_schedule.kind=entropy_adaptive \
    --config.objective.alpha_schedule.target_entropy="$TARGET"
done
[ -n "$DRY" ] && exit 0

# 7. the report: the small files of every finished run are kept in RESULTS/runs.
# (RESULTS/runs3: the second pass's kept runs stay apart in RESULTS/runs)
for d in "$OUT"/*_s*/; do
  [ -f "$d/summary.json" ] || continue
  mkdir -p "$RESULTS/runs3/$(basename "$d")"
  for f in summary.json metrics.jsonl evals.jsonl log.txt config.json; do
    [ -f "$d/$f" ] && cp "$d/$f" "$RESULTS/runs3/$(basename "$d")/"
  done
done
cp "$T/context.json" "$RESULTS/context.json"
python -m dkd_jax.report --study --context="$T/context.json" --out="$RESULTS" \
  "$RESULTS"/runs3/*_s*/ > "$OUT/report.txt"
echo "report: $RESULTS/results.md, claims.md, study.json"
