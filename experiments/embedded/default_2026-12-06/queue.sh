#!/bin/bash
# The six default runs of issue 22, one after another (nothing else running):
#   OUT=/tmp bash experiments/embedded/default_2026-12-06/queue.sh ["avx2:0 avx2:1 ..."]
# `python -m cyclejax.train --config.seed=N` with no other flag, through the recipe queue
# ("avx2:N" with the instruction set capped to AVX2, as on an AMD Zen 3; "native:N" as the
# machine is); workdirs, logs and summary.txt in ${OUT:-/tmp/recipe}/default.
exec bash "$(dirname "$0")/../recipe_2026-12-06/recipe_queue.sh" default \
  "${1:-avx2:0 avx2:1 avx2:2 native:0 native:1 native:2}"
