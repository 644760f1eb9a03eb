#!/usr/bin/env bash
# One short GPU check of etsdm (about 6 minutes on one H100/H200): the benchmarks on CUDA, and the
# default digits job trained on the GPU through accelerate in bf16, sampled and evaluated there.
# Usage: OUT=/some/dir bash bench/gpu_check.sh   (etsdm importable, e.g. PYTHONPATH=src)
set -u
OUT=${OUT:-/tmp/etsdm-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $*"; }
step "device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"
step "samplers vs bare forwards vs diffusers (cuda)"
timeout 150 python3 bench/samplers.py --device cuda --nfe 20 50 --networks none mlp unet --repeats 5
step "trainer vs plain loop (cuda)"
timeout 90 python3 bench/train.py --device cuda --steps 100 --rounds 3
step "lipschitz curve vs bare forwards (cuda)"
timeout 60 python3 bench/lipschitz.py --device cuda --samples 256 --batch 4096
step "default digits job on the GPU, bf16"
timeout 150 python3 -m etsdm train --out "$OUT/digits" --set train.mixed_precision=bf16 --no-progress
timeout 60 python3 -m etsdm sample "$OUT/digits" --sampler dpm-solver-3 --nfe 20 --num 300 --device cuda \
  --out "$OUT/dpm3-20.npz" --evaluate
