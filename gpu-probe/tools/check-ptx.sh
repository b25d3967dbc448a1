#!/usr/bin/env bash
# Assembles the CUDA challenge kernel (gpu-probe/src/challenge/matmul_u32.ptx) with NVIDIA's ptxas
# for every GPU generation the kernel targets, so a PTX error fails `make lint` here instead of
# the driver's JIT on a provider's GPU. ptxas comes from NVIDIA's PyPI wheel
# nvidia-cuda-nvcc-cu12 (pinned below), installed once into the tools cache that
# e2e/tools/build.sh uses and linked as .tools/bin/ptxas; no GPU is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=12.9.86
DIR="${GPUFED_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpufed}/tools/ptxas-$VERSION"
PTXAS=$DIR/nvidia/cuda_nvcc/bin/ptxas
if [ ! -x "$PTXAS" ]; then
  mkdir -p "$DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cuda-nvcc-cu12==$VERSION"
  python3 - "$tmp" "$DIR" <<'PY'
import os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = next(f for f in os.listdir(src) if f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(src, wheel)) as z:
    z.extract("nvidia/cuda_nvcc/bin/ptxas", dest)
PY
  chmod +x "$PTXAS"
fi
mkdir -p .tools/bin
ln -sfn "$PTXAS" .tools/bin/ptxas
KERNEL=gpu-probe/src/challenge/matmul_u32.ptx
for arch in sm_70 sm_80 sm_90; do
  "$PTXAS" -arch="$arch" "$KERNEL" -o /dev/null
done
echo "ptx: $KERNEL assembles for sm_70, sm_80 and sm_90 (ptxas $VERSION)"
