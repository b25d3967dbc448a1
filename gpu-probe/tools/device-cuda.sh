#!/usr/bin/env bash
# The CUDA challenge backend on a real GPU (run by the device tool where one is lent; see
# docs/adr/0022-challenges.md "Time bands"): the GPU test (every GPU's answer equals the CPU
# reference for its UUID), then 20 timed runs at each size for a profile. Writes under $OUT (or
# ./device-out): gpu.txt (model, driver), cuda-test.txt, profile-<n>.jsonl (one answer per run).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
SIZES=${SIZES:-"1024 4096"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
cargo build --release -q -p gpu-probe
cargo test --release -q -p gpu-probe --lib cuda -- --nocapture 2>&1 | tee "$OUT/cuda-test.txt"
probe=${CARGO_TARGET_DIR:-target}/release/gpu-probe
nonce=$(printf '00%.0s' $(seq 32))
for n in $SIZES; do
  : > "$OUT/profile-$n.jsonl"
  for _ in $(seq 20); do
    "$probe" challenge --backend cuda --id profile --nonce "$nonce" --n "$n" --stdout-only \
      >> "$OUT/profile-$n.jsonl"
  done
  python3 - "$OUT/profile-$n.jsonl" "$n" <<'PY'
import json, sys
ms = [g["ms"] for line in open(sys.argv[1]) for g in json.loads(line)["gpus"]]
print(f"n={sys.argv[2]}: {len(ms)} GPU runs, ms min {min(ms)} max {max(ms)}")
PY
done
