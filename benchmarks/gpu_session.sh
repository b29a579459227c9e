#!/usr/bin/env bash
# Everything a session lent a GPU machine runs there, in one command (../shared/gpu/README.md):
#   here, once:   echo /.whl/ >> .git/info/exclude; EXTRA="zuko==1.6.0" ../shared/gpu/fetch-wheels.sh .whl
#   device `run`: carry [".whl"], command "bash benchmarks/gpu_session.sh" (QUICK=1 for small sizes)
# Installs the carried wheels, runs `make test-gpu`'s tests and the GPU section of make bench; the logs,
# BENCHMARKS.md and benchmarks/results.json land in $OUT (copy the last two back into the checkout).
set -uo pipefail
out=${OUT:-/tmp/lit-vae-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "installing the carried wheels failed: fetch them with ../shared/gpu/fetch-wheels.sh .whl"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$out/test-gpu.log" | tail -15
python3 benchmarks/run.py --sections gpu ${QUICK:+--quick} > "$out/bench-gpu.log" 2>&1
tail -40 "$out/bench-gpu.log"
cp BENCHMARKS.md benchmarks/results.json "$out/" 2>/dev/null
