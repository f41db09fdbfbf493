#!/bin/bash
# lambda_identity 0.75, averages of the generator weights scored beside the last ones
# (experiments/embedded/averaging_trial.py), for the runs after capped seed 0 (run first, alone):
#   OUT=DIR bash experiments/embedded/averaging_2026-12-06/queue.sh   (run with the venv active)
cd "$(dirname "$0")/../../.."
mkdir -p "${OUT:-/tmp/avg}"
for r in avx2:1 native:2 native:0 avx2:2 native:1; do
  isa=${r%%:*}; s=${r##*:}
  if [ "$isa" = avx2 ]; then export XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
  else unset XLA_FLAGS ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY; fi
  d=${OUT:-/tmp/avg}/i075_${isa}_s$s; rm -rf "$d"
  start=$(date +%s)
  python experiments/embedded/averaging_trial.py "$s" "$d" lambda_identity=0.75 > "$d.log" 2>&1
  echo "$isa seed $s wall $(( $(date +%s) - start ))s" >> ${OUT:-/tmp/avg}/summary.txt
  tail -7 "$d.log" >> ${OUT:-/tmp/avg}/summary.txt
done
echo done >> ${OUT:-/tmp/avg}/summary.txt
