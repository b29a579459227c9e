#!/usr/bin/env bash
# Everything a session lent a GPU machine runs there, in one command that fits one `run` (../shared/gpu/README.md):
#   here, once:   echo /.whl/ >> .git/info/exclude; EXTRA="zuko==1.6.0" ../shared/gpu/fetch-wheels.sh .whl
#   here, first:  make test-gpu TEST_DEVICE=cpu   (the GPU tests' own code, dry-run on the CPU: no device time)
#   device `run`: carry [".whl"], timeout_s 600, command "bash benchmarks/gpu_session.sh"
#                 (LIMIT=seconds bounds the benchmark, default 240; QUICK=1 for small sizes)
# Installs the carried wheels, prints the versions, runs `make test-gpu`'s tests (4 at a time), then the GPU
# section of make bench, which starts nothing new after LIMIT seconds and lists what it left. Every log,
# BENCHMARKS.md and benchmarks/results.json land in $OUT as soon as they exist: copy the last two back into
# the checkout (only BENCHMARKS.md's GPU section and results.json's "gpu" key change).
set -uo pipefail
out=${OUT:-/tmp/lit-vae-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "installing the carried wheels failed: fetch them with ../shared/gpu/fetch-wheels.sh .whl"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import sys, torch, lightning, zuko; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "lightning", lightning.__version__, "zuko", zuko.__version__)' | tee -a "$out/gpu.txt"
workers=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 4" || echo "")
timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider $workers 2>&1 \
  | tee "$out/test-gpu.log" | tail -15
timeout 330 python3 benchmarks/run.py --sections gpu --time-limit "${LIMIT:-240}" ${QUICK:+--quick} 2>&1 \
  | tee "$out/bench-gpu.log" | grep -v "^\(Epoch\|Predicting\|Validation\|Sanity\)" | tail -40
cp BENCHMARKS.md benchmarks/results.json "$out/" 2>/dev/null
