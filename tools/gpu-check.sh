#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no .NET SDK: runs the `Gpu` tests and the
# benchmarks at FIBER shapes (at most 4.5 minutes) and, with --train, the stage-1 training throughput
# (up to 5 minutes more), and writes a report into OUTDIR.
#
# Build here first (a machine with the SDK), from the repository root:
#   tools/gpu-check.sh --build          # builds into .gpu/build and packs the .NET runtime into .gpu/
# then on the GPU machine, from the repository root (with .gpu/ carried along):
#   tools/gpu-check.sh OUTDIR [--train] [--model]
# --model adds issue 3's whole-model check (FIBER-B 384, batch 8, bf16 on the GPU vs the CPU fp32 reference;
# category GpuLong, several minutes).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--build" ]; then
  set -e
  dotnet build tests/FiberCuda.Tests -c Release -o .gpu/build/tests
  dotnet build tools/fiber-prof -c Release -o .gpu/build/prof
  # Native assets for other platforms (code-coverage engines for Windows/musl) would push the
  # carried tree past the device tool's 64 MiB; the GPU machine is linux-x64.
  rm -rf .gpu/build/tests/runtimes/win-* .gpu/build/tests/runtimes/*musl* .gpu/build/tests/runtimes/osx*
  pack=../shared/gpu/pack-dotnet-runtime.sh
  if [ -x "$pack" ]; then "$pack" "$PWD"; else echo "note: $pack not found; the GPU machine then needs its own .NET runtime"; fi
  exit 0
fi

out=${1:-gpu-report}
mkdir -p "$out"; out=$(cd "$out" && pwd)
log() { echo "[$(date +%T)] $*" | tee -a "$out/report.md"; }

if ! command -v dotnet >/dev/null; then
  [ -f .gpu/dotnet-runtime.tar.xz ] || { echo "no dotnet and no .gpu/dotnet-runtime.tar.xz" >&2; exit 2; }
  D=$(mktemp -d); tar -xJf .gpu/dotnet-runtime.tar.xz -C "$D"
  export DOTNET_ROOT="$D" PATH="$D:$PATH"
fi
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
# Our resolver searches the usual places; name the CUDA library folder explicitly when one exists.
if [ -z "${FIBER_CUDA_LIB_DIR:-}" ]; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "$d/libcublasLt.so" ] || ls "$d"/libcublasLt.so.* >/dev/null 2>&1 || continue
    export FIBER_CUDA_LIB_DIR=$d; break
  done
fi
export FIBER_KERNEL_CACHE=${FIBER_KERNEL_CACHE:-/tmp/fibercuda-cache}

{ echo "# FiberCuda GPU check"; echo; echo '```'; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1; echo "FIBER_CUDA_LIB_DIR=${FIBER_CUDA_LIB_DIR:-}"; echo '```'; } > "$out/report.md"

log "Gpu tests"
rm -f "$out/bench.jsonl"
FIBER_BENCH_JSONL="$out/bench.jsonl" timeout 150 dotnet .gpu/build/tests/FiberCuda.Tests.dll --filter "TestCategory=Gpu" --no-progress --output Detailed \
  > "$out/gpu-tests.log" 2>&1
echo "gpu tests exit: $?" | tee -a "$out/report.md"
tail -n 8 "$out/gpu-tests.log" >> "$out/report.md"

log "benchmarks at FIBER shapes"
timeout 120 dotnet .gpu/build/prof/fiber-prof.dll --device gpu --shapes fiber --json "$out/bench.json" \
  > "$out/bench.txt" 2>&1
echo "bench exit: $?" | tee -a "$out/report.md"
cat "$out/bench.txt" >> "$out/report.md"

log "custom model kernels vs PyTorch eager (same GPU, same run)"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  timeout 90 python3 tools/bench/torch_model_kernels.py "$out/torch-kernels.json" > "$out/torch-kernels.txt" 2>&1
  echo "torch kernels exit: $?" | tee -a "$out/report.md"
  python3 tools/bench/compare_torch.py "$out/torch-kernels.json" --prof "$out/bench.json" --jsonl "$out/bench.jsonl" \
    --out "$out/vs-torch.json" 2>&1 | tee -a "$out/report.md"
else
  echo "no PyTorch with CUDA here: no eager comparison" | tee -a "$out/report.md"
fi

want() { local f; for f in "${@:2}"; do [ "$f" = "$1" ] && return 0; done; return 1; }
extra=("${@:2}")

if want --model "${extra[@]}"; then
  log "whole-model check: FIBER-B 384 batch 8 bf16 (GPU) vs fp32 (CPU)"
  timeout 600 dotnet .gpu/build/tests/FiberCuda.Tests.dll --filter "TestCategory=GpuLong" --no-progress --output Detailed \
    > "$out/model-check.log" 2>&1
  echo "model check exit: $?" | tee -a "$out/report.md"
  grep -E "output |grad |gradients compared|batch [0-9]|failed|passed" "$out/model-check.log" | head -20 >> "$out/report.md"
fi

if ! want --train "${extra[@]}"; then log "done (training throughput: rerun with --train)"; exit 0; fi

log "stage-1 training throughput, FIBER-B 384 bf16 batch 8 (official paths, then --shared-lower)"
for shared in "" "--shared-lower"; do
  timeout 150 dotnet .gpu/build/prof/fiber-prof.dll --train fiber-b-coarse-384 --device gpu --dtype bf16 --batch 8 --steps 5 $shared \
    --json "$out/train${shared:+-shared}.json" > "$out/train${shared:+-shared}.txt" 2>&1
  echo "train bench ${shared:-official} exit: $?" | tee -a "$out/report.md"
  cat "$out/train${shared:+-shared}.txt" >> "$out/report.md"
done
log "done"
