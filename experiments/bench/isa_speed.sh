#!/bin/bash
# The speed record of experiments/bench/README.md ("Current state"): the step at 128² and 256²,
# float32 against the official PyTorch iteration and bfloat16, with the instruction set capped
# to AVX2 (XLA, both oneDNNs, torch's own kernels) and as the machine is, one after another.
#   bash experiments/bench/isa_speed.sh [OUT]     (about 13 minutes on the 2-core VM)
set -u
out=${1:-isa_speed}; mkdir -p "$out"
CAP=(XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
for size in 128 256; do
  for isa in avx2 native; do
    env=(); [ $isa = avx2 ] && env=("${CAP[@]}")
    for run in "fp32_torch --compare=torch" "bf16 --dtype=bfloat16"; do
      name=${run%% *}; flags=${run#* }
      log=$out/${isa}_${size}_${name}_r1.log
      echo "== $(date -u +%FT%TZ) ${env[*]} python -m cyclejax.bench --size=$size --steps=5 $flags" > "$log"
      env "${env[@]}" python -m cyclejax.bench --size=$size --steps=5 $flags >> "$log" 2>&1
    done
  done
done
