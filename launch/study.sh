#!/usr/bin/env bash
# The small-scale study (issue: tradeoffs of DESIGN.md §1, §6): the four quadrants,
# KL mixing and the length curriculum on the embedded arithmetic task, plus a
# training-horizon sweep with and without the curriculum; then the report.
#
#   launch/study.sh [OUT_DIR=runs/study] [STEPS=1200] [RESULTS=docs/results]
#
# Every run shares one bootstrapped teacher (trained once by the first run and copied
# into the others' workdirs, where the teacher cache picks it up). About an hour on
# 2 CPU cores with STEPS=1200 (about 15 minutes with STEPS=300). The curriculum's
# min_steps per stage scales with the horizon (1/6 of it: three stages in the first half).
set -euo pipefail
OUT=${1:-runs/study}; STEPS=${2:-1200}; RESULTS=${3:-docs/results}
cd "$(dirname "$0")/.."
mkdir -p "$OUT" "$RESULTS"
run() {  # run NAME CONFIG STEPS [overrides...]
  local name=$1 cfg=$2 steps=$3; shift 3
  if [ -d "$OUT/fwd_teacher/teacher" ] && [ ! -d "$OUT/$name/teacher" ]; then
    mkdir -p "$OUT/$name" && cp -r "$OUT/fwd_teacher/teacher" "$OUT/$name/"
  fi
  [ -f "$OUT/$name/summary.json" ] && return 0   # finished earlier: the study resumes
  python -m dkd_jax.launch --config="configs/$cfg" --workdir="$OUT/$name" \
      --config.train.steps="$steps" "$@"
}
run fwd_teacher fwd_teacher.py "$STEPS"
run fwd_student fwd_student.py "$STEPS"
run rev_teacher rev_teacher.py "$STEPS"
run rev_student rev_student.py "$STEPS"
run kl_mix kl_mix.py "$STEPS"
run curriculum curriculum.py "$STEPS" --config.curriculum.min_steps=$((STEPS / 6))
# Horizon sweep: the curriculum config's objective (on-policy, mixed KL) at 1/3x, 1x and
# 2x the horizon, without the curriculum; with it at 1/3x and 2x (1x is the run above).
run "horizon_${STEPS}_plain" curriculum.py "$STEPS" --config.curriculum.enabled=False
for steps in $((STEPS / 3)) $((STEPS * 2)); do
  run "horizon_${steps}_plain" curriculum.py "$steps" --config.curriculum.enabled=False
  run "horizon_${steps}_curriculum" curriculum.py "$steps" \
      --config.curriculum.min_steps=$((steps / 6))
done
python -m dkd_jax.report "$OUT"/*/ --out="$RESULTS"
{
  echo "# Small-scale study"
  echo
  echo "Produced by \`launch/study.sh $OUT $STEPS $RESULTS\` on $(nproc) CPU cores, $(date -u +%F)."
  echo
  cat "$RESULTS/results.md"
} > "$RESULTS/README.md"
