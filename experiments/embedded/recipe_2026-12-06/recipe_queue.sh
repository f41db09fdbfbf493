#!/bin/bash
# One recipe, run after run, stopping at the first run with a direction above 0.40:
#   bash experiments/embedded/recipe_2026-12-06/recipe_queue.sh NAME "native:2 avx2:0 ..." --config.KEY=VALUE ...
# "avx2:N" is seed N with the instruction set capped to AVX2 (as on an AMD Zen 3). Runs and
# logs go to ${OUT:-/tmp/recipe}/NAME; one line per run in its summary.txt.
set -u
cd "$(dirname "$0")/../../.."
name=$1; runs=$2; shift 2
out=${OUT:-/tmp/recipe}/$name
mkdir -p "$out"
for r in $runs; do
  isa=${r%%:*}; s=${r##*:}
  if [ "$isa" = avx2 ]; then export XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
  else unset XLA_FLAGS ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY; fi
  d=$out/${isa}_s$s; rm -rf "$d"
  start=$(date +%s)
  python -m cyclejax.train --workdir="$d" --config.seed="$s" "$@" > "$d.log" 2>&1
  wall=$(( $(date +%s) - start ))
  a=$(grep -E '^AtoB ' "$d.log" | tail -1 | awk '{print $NF}'); b=$(grep -E '^BtoA ' "$d.log" | tail -1 | awk '{print $NF}')
  echo "$isa seed $s: AtoB $a BtoA $b wall ${wall}s" >> "$out/summary.txt"
  python -c "import sys; sys.exit(0 if max($a, $b) <= 0.40 else 1)" || { echo "failed, stopping" >> "$out/summary.txt"; break; }
done
