#!/bin/bash
# The six default runs of issue 22, one after another (nothing else running):
#   OUT=/tmp/default6 bash experiments/embedded/default_2026-12-06/queue.sh ["avx2:0 avx2:1 ..."]
# "avx2:N" is `python -m cyclejax.train --config.seed=N` with the instruction set capped to AVX2
# (as on an AMD Zen 3), "native:N" the same as the machine is. Each run's workdir and log go to
# ${OUT:-/tmp/default6}; one line per run in its summary.txt (scores and wall time).
set -u
cd "$(dirname "$0")/../../.."
out=${OUT:-/tmp/default6}
runs=${1:-"avx2:0 avx2:1 avx2:2 native:0 native:1 native:2"}
mkdir -p "$out"
for r in $runs; do
  isa=${r%%:*}; s=${r##*:}
  if [ "$isa" = avx2 ]; then export XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
  else unset XLA_FLAGS ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY; fi
  d=$out/${isa}_s$s; rm -rf "$d"
  start=$(date +%s)
  python -m cyclejax.train --workdir="$d" --config.seed="$s" > "$d.log" 2>&1
  wall=$(( $(date +%s) - start ))
  a=$(grep -E '^AtoB ' "$d.log" | tail -1 | awk '{print $NF}'); b=$(grep -E '^BtoA ' "$d.log" | tail -1 | awk '{print $NF}')
  echo "$isa seed $s: AtoB $a BtoA $b wall ${wall}s" >> "$out/summary.txt"
done
