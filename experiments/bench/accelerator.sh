#!/usr/bin/env bash
# The accelerator benchmark, one script: `bash experiments/bench/accelerator.sh [--dry-run] [OUT]`.
#
# On one GPU (meant to finish in under 8 minutes on an H100/H200): cyclejax's train step at
# 256x256, resnet_9blocks + basic D, ngf = ndf = 64, in fp32 and in bf16, per-device batch 1
# and 8 (compile time, img/s, peak device memory, MFU), then the official PyTorch iteration on
# CUDA at batch 1 fp32 in the same run (`python -m cyclejax.bench --compare=torch`).
# Writes OUT/results.jsonl (one bench JSON line per run) and prints OUT/table.md.
#
# --dry-run: the same sequence at a toy size (32x32, resnet_6blocks, ngf = ndf = 4, batches 1
# and 2, two steps) on whatever device there is; the tests run it on CPU.
#
# MFU = the step's model FLOPs (XLA's count of the step before optimisation, all devices) /
# step time / (devices x one device's dense peak).
# Peaks (dense, no sparsity), from NVIDIA's H100 and H200 Tensor Core GPU datasheets (SXM;
# the H200 has the H100's compute): bf16 tensor 989.4 TFLOP/s; fp32 67 TFLOP/s without
# tensor cores, 494.7 with TF32 (XLA's default precision lets fp32 convolutions use TF32 on
# Hopper), so fp32 MFU is given against TF32. H100 PCIe: bf16 756.5, TF32 378, fp32 51.
#
# On the project's device machine (an H200 image with jax, flax, optax, orbax and torch, but
# no TensorFlow, which the benchmark does not import, and no ml_collections): here, once,
# `python3 -m pip download --no-deps --only-binary=:all: -d .whl ml-collections==1.1.0`;
# then `run` with carry [".whl"] and `PYTHONUNBUFFERED=1 bash experiments/bench/accelerator.sh
# $OUT/acc`. Wheels found in .whl/ are installed into /tmp/cyclejax-site when a module the
# benchmark needs is missing. PYTHON chooses the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-python3}"

dry=0
if [[ "${1:-}" == "--dry-run" ]]; then dry=1; shift; fi
out="${1:-experiments/bench/accelerator-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
: > "$out/results.jsonl"

if (( dry )); then
  sizes=(--netG=resnet_6blocks --size=32 --ngf=4 --ndf=4 --steps=2 --warmup=1)
  batches=(1 2)
else
  sizes=(--netG=resnet_9blocks --size=256 --ngf=64 --ndf=64 --steps=10 --warmup=2)
  batches=(1 8)
fi

need="import jax, flax.linen, optax, ml_collections, absl, PIL"
if ! "$py" -c "$need" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/cyclejax-site .whl/*.whl
  export PYTHONPATH="/tmp/cyclejax-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$py" -c "$need"; then
  echo "error: $py lacks a module the benchmark needs (above); pip install -e . here, or carry its wheel in .whl/" >&2
  exit 2
fi
"$py" -c "import jax, platform; print('jax', jax.__version__, 'on', jax.devices(), 'python', platform.python_version())" \
  | tee "$out/environment.txt"
n_dev=$("$py" -c "import jax; print(jax.local_device_count())")
failed=0
for dtype in float32 bfloat16; do
  for b in "${batches[@]}"; do
    extra=()
    # The torch reference once: fp32, per-device batch 1 (torch runs on one device).
    if [[ $dtype == float32 && $b == "${batches[0]}" ]]; then extra=(--compare=torch); fi
    log="$out/${dtype}_batch$b.log"
    echo "== python -m cyclejax.bench ${sizes[*]} --batch=$((b * n_dev)) --dtype=$dtype ${extra[*]}"
    # One failed run (out of memory, say) must not cost the others: its log is kept and the
    # table says it failed.
    if "$py" -m cyclejax.bench "${sizes[@]}" --batch=$((b * n_dev)) --dtype="$dtype" "${extra[@]}" 2>&1 | tee "$log"; then
      grep "^{" "$log" | tail -n 1 >> "$out/results.jsonl"  # the JSON line (stderr is in the log too)
    else
      failed=1
      "$py" -c 'import json, sys; print(json.dumps({"dtype": sys.argv[1], "batch": int(sys.argv[2]), "failed": sys.argv[3]}))' \
        "$dtype" "$((b * n_dev))" "$log" >> "$out/results.jsonl"
    fi
  done
done

"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
# Dense peaks in TFLOP/s: (bf16 tensor, fp32 as TF32 tensor), by device name.
PEAKS = {"H200": (989.4, 494.7), "H100 PCIe": (756.5, 378.0), "H100": (989.4, 494.7)}
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
lines = ["| device | dtype | batch | compile s | s/step | img/s | peak device MB | TFLOP/s | MFU | torch img/s | ratio |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "failed" in r:
        lines.append(f"| | {r['dtype']} | {r['batch']} | failed: see {r['failed']} | | | | | | | |")
        continue
    kind = r["devices"]
    peak = next((p for name, p in PEAKS.items() if name in kind), None)
    tflops = r["tflop_per_step"] / r["s_per_step"]  # all devices together
    n_devices = int(kind.split(" x ")[0])
    mfu = (f"{tflops / n_devices / (peak[0] if r['dtype'] == 'bfloat16' else peak[1]):.1%}" if peak
           else "n/a (no peak for this device)")
    mem = r.get("peak_device_memory_mb")
    mem = f"{mem:.0f}" if mem is not None else "n/a"
    torch_img = f"{r['batch'] / r['torch_s_per_step']:.2f}" if "torch_s_per_step" in r else ""
    ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
    lines.append(f"| {kind} | {r['dtype']} | {r['batch']} | {r['compile_s']:.1f} | {r['s_per_step']:.4f} | "
                 f"{r['img_per_s']:.2f} | {mem} | {tflops:.1f} | {mfu} | {torch_img} | {ratio} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
exit $failed
