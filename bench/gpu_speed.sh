#!/usr/bin/env bash
# One short GPU speed check for issue 11 (about 6 minutes on one H100/H200): compiled (CUDA-graph)
# sampling vs eager vs bare forwards, torch.compile on the tiny UNet, the trainer vs a plain loop,
# and the Lipschitz curve vs bare forwards, all on CUDA.
# Usage: OUT=/some/dir bash bench/gpu_speed.sh   (etsdm importable, e.g. PYTHONPATH=src)
set -u
OUT=${OUT:-/tmp/etsdm-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $*"; }
step "device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"
step "compiled sampling: CUDA graph vs eager vs bare forwards"
timeout 200 python3 bench/gpu_sampling.py --repeats 10
step "torch.compile + CUDA graph, tiny UNet"
timeout 150 python3 bench/gpu_sampling.py --nets tiny --batches 1 64 --samplers ddim:20 --repeats 10 --compile
step "trainer vs plain loop (cuda)"
timeout 90 python3 bench/train.py --device cuda --steps 100 --rounds 3
step "lipschitz curve vs bare forwards (cuda)"
timeout 60 python3 bench/lipschitz.py --device cuda --samples 256 --batch 4096
