#!/usr/bin/env bash
# The GPU benchmark suite: every default zoo model at 512/1024/2048 on PyTorch eager (FP32 with TF32 off, FP16),
# torch.compile, ONNX Runtime CUDA and TensorRT where installed (`--backend auto` plus torch-compile; backends
# that are not installed are reported as unavailable, never faked), with the same-run GPU GEMM probe (FP32 and
# FP16 torch.mm 2048^3) before and after the cases, writing JSON/CSV/PNG to $OUT/gpu-<gpu-name>/$NAME.*.
# Sized for <= 8 minutes on an H100/H200: 2 warm-up runs, then timed runs for at most $SECONDS_PER_CASE s.
# AOTInductor packages are not a bench backend yet (deploykit export --aoti builds them; time them with
# deploykit infer).
#
#   bash benchmarks/gpu_suite.sh                      # the full suite (GPU machine)
#   MODELS=srresnet:x2 RES=32 BACKENDS=torch PRECISIONS=fp32 OUT=/tmp/r bash benchmarks/gpu_suite.sh   # dry run
set -euo pipefail

MODELS=${MODELS:-"mirnetv2 mirnet mprnet udvd vapsr edsr rcan srresnet"}
RES=${RES:-"512,1024,2048"}
BACKENDS=${BACKENDS:-"auto,torch-compile"}
PRECISIONS=${PRECISIONS:-"fp32,fp16"}
WARMUP=${WARMUP:-2}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-2}
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-gpu-suite}
DEPLOYKIT=${DEPLOYKIT:-deploykit}

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
else
  echo "gpu_suite: no nvidia-smi here: a dry run on this machine's CPU (no GPU figures)" >&2
fi

# shellcheck disable=SC2086  # MODELS is a word list on purpose
exec $DEPLOYKIT bench $MODELS --res "$RES" --backend "$BACKENDS" --precision "$PRECISIONS" \
  --warmup "$WARMUP" --seconds "$SECONDS_PER_CASE" --out "$OUT" --name "$NAME"
