#!/usr/bin/env bash
# One prepared GPU run: the KL, generate and on-policy (OPD) benchmarks in under 6 minutes,
# then one JSON line {"kl": ..., "generate": ..., "opd": ..., "seconds": ...} (each value
# the last JSON line of that benchmark, or {"error": ...}).
#
#   bash benchmarks/device_suite.sh            # from the repository root, on the GPU machine
#
# JAX's CUDA build is installed when the default backend is not a GPU
# (`pip install jax[cuda12]` at the installed jax version). transformers stays on torch's
# CPU build (torch==2.13.0), so the generate row's peer is CPU: record it as such.
# Budgets: KL 120 s, generate 100 s (one rep per path), OPD 130 s (each killed past its
# budget; 350 s in all). Untried on a GPU so far: no session was lent one.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

if ! python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  v=$(python -c "import jax; print(jax.__version__)")
  pip install -q "jax[cuda12]==$v" >&2 || echo "jax[cuda12]==$v install failed" >&2
fi
python -c "import jax; print('backend', jax.default_backend(), jax.devices(), file=__import__('sys').stderr)"

# Runs one benchmark under a time budget; prints its last JSON line or an error object.
run() {
  local budget=$1; shift
  local out
  out=$(timeout "$budget" "$@" 2>/tmp/device_suite_err.txt | tee /dev/stderr | grep '^{' | tail -1)
  if [ -z "$out" ]; then
    local why
    why=$(tail -3 /tmp/device_suite_err.txt | tr '"\n\\' "'  ")
    out="{\"error\": \"exit or timeout (budget ${budget}s): ${why}\"}"
  fi
  echo "$out"
}

kl=$(run 120 python benchmarks/kl_bench.py --shapes 4096x576x49152,4096x576x151936 --reps 5)
gen=$(run 100 python benchmarks/generate_bench.py --naive-steps 2 --reps 1)
if [ -f benchmarks/opd_bench.py ]; then
  opd=$(run 130 python benchmarks/opd_bench.py)
else
  opd='{"error": "benchmarks/opd_bench.py not written yet"}'
fi
echo "{\"kl\": $kl, \"generate\": $gen, \"opd\": $opd, \"seconds\": $(( $(date +%s) - start ))}"
