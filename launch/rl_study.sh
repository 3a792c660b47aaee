#!/usr/bin/env bash
# The RL-init study (DESIGN §9, issue 13): GRPO for a fixed budget of RL steps from each
# distilled student of a study OUT directory, and from the un-distilled student, over
# several seeds; then the table and figure (python -m dkd_jax.rl_report).
#
#   launch/rl_study.sh STUDY_OUT [RL_OUT=runs/rl_study] [STEPS=200] [SEEDS="0 1 2"] \
#       [RESULTS=docs/results] [--config.x=y ...]
#
# Paths are relative to the repository root. Arms: every STUDY_OUT/<run>/ that finished
# (summary.json) and is a distillation run, or only those named in $ARMS (e.g.
# ARMS="fwd_teacher fwd_student rev_teacher rev_student kl_mix curriculum"); plus
# "undistilled": the student the first arm STARTED from (init.restore_student=False),
# with that arm's teacher and task. Each (arm, seed) is RL_OUT/<arm>/seed<s>/, a GRPO
# workdir; one with summary.json is skipped, a killed one resumes from its checkpoint.
# Arguments after the fifth are config overrides for every GRPO run (e.g. a preset's
# sizes: --config.rl.group_size=8 --config.eval.k=8).
set -euo pipefail
STUDY=${1:?usage: launch/rl_study.sh STUDY_OUT [RL_OUT] [STEPS] [SEEDS] [RESULTS] [overrides]}
OUT=${2:-runs/rl_study}; STEPS=${3:-200}; SEEDS=${4:-"0 1 2"}; RESULTS=${5:-docs/results}
shift $(( $# < 5 ? $# : 5 ))
EXTRA=("$@")
cd "$(dirname "$0")/.."
mkdir -p "$OUT" "$RESULTS"

grpo() {  # grpo ARM INIT_RUN_DIR SEED [overrides...]
  local arm=$1 init=$2 seed=$3; shift 3
  local work="$OUT/$arm/seed$seed"
  [ -f "$work/summary.json" ] && return 0
  python -m dkd_jax.launch --config=configs/grpo.py --workdir="$work" \
      --config.init.checkpoint="$init" --config.rl.seed="$seed" \
      --config.train.steps="$STEPS" "$@" ${EXTRA[@]+"${EXTRA[@]}"}
}

is_arm() {  # a finished distillation run (not a GRPO run), in $ARMS when given
  local run=$1 name; name=$(basename "$run")
  [ -f "$run/summary.json" ] && [ -d "$run/checkpoints" ] || return 1
  grep -q '"rl":' "$run/config.json" && return 1
  [ -z "${ARMS:-}" ] || [[ " $ARMS " == *" $name "* ]]
}

first=""
for run in "$STUDY"/*/; do
  run=${run%/}
  is_arm "$run" || continue
  first=${first:-$run}
  for seed in $SEEDS; do grpo "$(basename "$run")" "$run" "$seed"; done
done
[ -n "$first" ] || { echo "no finished distillation runs under $STUDY" >&2; exit 1; }
for seed in $SEEDS; do
  grpo undistilled "$first" "$seed" --config.init.restore_student=False
done

python -m dkd_jax.rl_report "$OUT" --out="$RESULTS"
{
  echo "# RL after distillation (GRPO)"
  echo
  echo "Produced by \`launch/rl_study.sh $STUDY $OUT $STEPS \"$SEEDS\" $RESULTS ${EXTRA[*]:-}\`"
  echo "on $(nproc) CPU cores, $(date -u +%F). Arms start from $STUDY/<arm> (undistilled:"
  echo "the student $first started from). Mean over seeds; [95% bootstrap interval over problems]."
  echo
  cat "$RESULTS/rl_results.md"
} > "$RESULTS/RL_README.md"
