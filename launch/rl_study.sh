#!/usr/bin/env bash
# The RL-init study (DESIGN §9, issue 13): GRPO for a fixed budget of RL steps from each
# distilled student of a study OUT directory, and from the un-distilled student, over
# several seeds; then the table and figure (python -m dkd_jax.rl_report). The third study
# (issue 22) runs it as: launch/rl_study.sh runs/study3 runs/rl_study3 100 "0 1 2 3" \
#   docs/results --config.rl.dynamic_sampling=resample --config.optim.lr=2e-4 \
#   --config.rl.eval_every=25 --config.rl.eval_problems=250
#
#   launch/rl_study.sh STUDY_OUT [RL_OUT=runs/rl_study] [STEPS=200] [SEEDS="0 1 2"] \
#       [RESULTS=docs/results] [--config.x=y ...]
#
# Paths are relative to the repository root. Arms: every STUDY_OUT/<run>/ that finished
# (summary.json) and is a distillation run, or only those whose arm name is in $ARMS (e.g.
# ARMS="fwd_teacher fwd_student rev_teacher rev_student mix_a50 horizon_long_curriculum").
# A run named <arm>_s<N> (launch/study.sh's layout) is seed N's distilled student: it gets
# RL seed N only (when N is in SEEDS), so an arm's seeds vary the distillation and the RL
# together; a run without the suffix gets every seed of SEEDS (warm_start_s<N> runs are
# the study's baseline measurements, not arms). Plus the undistilled baseline: for
# seed N, "warm_start": the student that the first <arm>_s<N> run STARTED from (init.restore_student=
# False), with that run's teacher and task. Each (arm, seed) is RL_OUT/<arm>/seed<s>/, a
# GRPO workdir; one with summary.json is skipped, a killed one resumes from its checkpoint.
# Arguments after the fifth are config overrides for every GRPO run (e.g. a cheaper curve:
# --config.rl.eval_problems=300 --config.rl.eval_every=20).
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

arm_of() {  # fwd_student_s2 -> fwd_student; a name without the suffix is its own arm
  local name; name=$(basename "$1")
  if [[ $name =~ ^(.+)_s([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"; else echo "$name"; fi
}
seed_of() {  # fwd_student_s2 -> 2; empty without the suffix
  local name; name=$(basename "$1")
  if [[ $name =~ _s([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"; fi
}

is_arm() {  # a finished distillation run (not a GRPO run), in $ARMS when given
  local run=$1
  [ -f "$run/summary.json" ] && [ -d "$run/checkpoints" ] || return 1
  grep -q '"rl":' "$run/config.json" && return 1
  [ "$(arm_of "$run")" != warm_start ] || return 1
  [ -z "${ARMS:-}" ] || [[ " $ARMS " == *" $(arm_of "$run") "* ]]
}

declare -A base=()   # seed -> the run whose starting student is that seed's undistilled one
first=""
for run in "$STUDY"/*/; do
  run=${run%/}
  is_arm "$run" || continue
  first=${first:-$run}
  s=$(seed_of "$run")
  if [ -z "$s" ]; then
    for seed in $SEEDS; do grpo "$(arm_of "$run")" "$run" "$seed"; done
  elif [[ " $SEEDS " == *" $s "* ]]; then
    base[$s]=${base[$s]:-$run}
    grpo "$(arm_of "$run")" "$run" "$s"
  fi
done
[ -n "$first" ] || { echo "no finished distillation runs under $STUDY" >&2; exit 1; }
for seed in $SEEDS; do
  if [ -n "${base[$seed]:-}" ]; then
    grpo warm_start "${base[$seed]}" "$seed" --config.init.restore_student=False
  else   # seeds need their own starting student: wait for a finished <arm>_s<seed>
    echo "warm_start seed $seed: no finished <arm>_s$seed run under $STUDY yet" >&2
  fi
done

SJ=(); [ -f "$RESULTS/study.json" ] && SJ=(--study_json="$RESULTS/study.json")
python -m dkd_jax.rl_report "$OUT" --out="$RESULTS" ${SJ[@]+"${SJ[@]}"}
{
  echo "# RL after distillation (GRPO)"
  echo
  echo "Produced by \`launch/rl_study.sh $STUDY $OUT $STEPS \"$SEEDS\" $RESULTS ${EXTRA[*]:-}\`"
  echo "on $(nproc) CPU cores, $(date -u +%F). Arms start from $STUDY/<arm>_s<seed> (warm_start:"
  echo "the student those runs started from). Seed mean [95% t-interval over seeds]."
  echo
  cat "$RESULTS/rl_results.md"
} > "$RESULTS/RL_README.md"
