#!/usr/bin/env bash
# Issue 11's GPU speed check in ONE call of at most BUDGET = 530 s: the rows still missing from
# docs/results/gpu_speed_h200.log, in priority order. Each step has its own timeout; a step that runs
# past it is killed (with its child processes) and skipped, and the later steps still run. Each
# step's output also goes to $OUT/<step>.log (partial results survive a timeout); $OUT/summary.txt
# says how each step ended and how long it took.
#
#   step           what                                                            timeout (s)
#   wheels         diffusers from .whl/ into /tmp/site, only if it does not import           30
#   setup          device, versions, commit                                                  25
#   a_normal       Table A1 normal UNet, batch 16, bf16: CUDA graph vs eager vs bare       105
#                  (graphed) forwards, rel diff vs eager, peak / graph memory
#   b_compile      tiny UNet, batch 1 and 64, NFE 20: torch.compile (mode "default", as
#                  etsdm's CapturedSampler(compile=True): no autotuning, compiles in    115
#                  tens of s; "max-autotune-no-cudagraphs" did not finish in 150 s) + CUDA
#                  graph, vs eager, graph and bare compiled forwards; peak memory
#   c_train        Trainer vs plain loop, eager and torch.compile, E-TSDM on and off      185
#                  (1 round x 60 steps; a phase <= 120 s, all <= 175 s (--budget): the
#                  first compiled phase compiles cold, the later ones hit inductor's cache)
#   d_lipschitz    Lipschitz curve vs bare forwards (UNet, MLP), peak memory                55
#                                                          sum (+ <= 5 s kill each):      515
#
# On the lent device (torch there, diffusers not): .whl/ (git-ignored through .git/info/exclude:
# diffusers and importlib_metadata wheels) goes with the call, carry [".whl"]; the recipe is
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=src:/tmp/site
# which this script runs itself (step wheels) when diffusers does not import and .whl/ exists. So the
# device call is: run(command="bash bench/gpu_speed.sh", carry=[".whl"], timeout_s=570).
#
# Smoke test on a CPU (every step with tiny sizes, about 2 minutes): SMOKE=1 bash bench/gpu_speed.sh
# (or bash bench/gpu_speed.sh --dry).     Usage: OUT=/some/dir bash bench/gpu_speed.sh
set -u
[[ ${1:-} == --dry ]] && SMOKE=1
SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-530}
PY=${PY:-python3}
OUT=${OUT:-/tmp/etsdm-gpu}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
export PYTHONUNBUFFERED=1
START=$SECONDS

# run_step NAME TIMEOUT_S TITLE COMMAND...: COMMAND under `timeout` (its whole process group is killed
# at the limit, or at what is left of BUDGET if less), its output to the terminal and $OUT/NAME.log.
run_step() {
  local name=$1 limit=$2 title=$3
  shift 3
  local left=$((BUDGET - (SECONDS - START) - 5))
  ((limit > left)) && limit=$left
  echo
  echo "=== [$name] $title (timeout ${limit} s, $((SECONDS - START)) s elapsed)"
  if ((limit < 10)); then
    echo "--- [$name] skipped: the ${BUDGET} s budget is spent"
    printf '%-12s skipped (budget spent)\n' "$name" >>"$SUMMARY"
    return
  fi
  local t0=$SECONDS status
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  case $rc in
    0) status="ok" ;;
    124 | 137) status="TIMED OUT at ${limit} s: skipped (what it printed is in $name.log)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "--- [$name] $status, $((SECONDS - t0)) s"
  printf '%-12s %4d s  %s\n' "$name" $((SECONDS - t0)) "$status" >>"$SUMMARY"
}

setup() {
  if ((SMOKE)); then
    echo "SMOKE=1: every step on the CPU with tiny sizes ($(nproc) cores)"
  else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  fi
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  $PY -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"
}

install_wheels() {
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

export -f setup install_wheels  # run_step runs them under timeout, in a child bash
export SMOKE PY
if ! $PY -c "import diffusers" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  run_step wheels 30 "diffusers from .whl/ into /tmp/site" bash -c install_wheels
  export PYTHONPATH=src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import etsdm" 2>/dev/null || export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

if ((SMOKE)); then
  DEV=(--device cpu)
  A=(--nets normal --normal-res 32 --normal-batch 1 --samplers ddim:2 --repeats 1)
  B=(--nets tiny --batches 2 --samplers ddim:2 --repeats 1)
  C=(--threads 1 --rounds 1 --steps 2 --warmup 1 --phase-timeout 60 --budget 150)
  D=(--threads 1 --samples 4 --t-end 9 --batch 16 --repeats 1 --mlp-repeats 1)
else
  DEV=(--device cuda)
  A=(--nets normal --normal-batch 16 --samplers ddim:20 --repeats 3)
  B=(--nets tiny --batches 1 64 --samplers ddim:20 --repeats 5)
  C=(--rounds 1 --steps 60 --warmup 10 --phase-timeout 120 --budget 175)
  D=(--samples 256 --batch 4096 --repeats 5 --mlp-repeats 10)
fi

run_step setup 25 "device, versions" bash -c setup
run_step a_normal 105 "normal UNet (Table A1), batch 16, bf16: CUDA graph vs eager vs bare forwards" \
  $PY bench/gpu_sampling.py "${DEV[@]}" "${A[@]}"
run_step b_compile 115 "torch.compile (mode default) + CUDA graph, tiny UNet, batch 1 and 64" \
  $PY bench/gpu_sampling.py "${DEV[@]}" "${B[@]}" --compile --compile-mode default
run_step c_train 185 "Trainer vs plain loop, eager and torch.compile, E-TSDM on and off" \
  $PY bench/train.py "${DEV[@]}" --compile "${C[@]}"
run_step d_lipschitz 55 "Lipschitz curve vs bare forwards, peak memory" \
  $PY bench/lipschitz.py "${DEV[@]}" "${D[@]}"

echo
echo "=== summary ($((SECONDS - START)) s in all; logs in $OUT)"
cat "$SUMMARY"
