#!/usr/bin/env bash
# Everything a session lent a GPU machine runs there, in one command that fits one `run` (../shared/gpu/README.md):
#   here, once:   echo /.whl/ >> .git/info/exclude; EXTRA="zuko==1.6.0" ../shared/gpu/fetch-wheels.sh .whl
#   here, first:  DRY=1 bash benchmarks/gpu_session.sh   (all of it on the CPU, small: ~3 min, no device time)
#   device `run`: carry [".whl"], timeout_s 600, command "bash benchmarks/gpu_session.sh"
#                 (LIMIT=seconds bounds the benchmark, default 200; QUICK=1 for small sizes)
# Installs the carried wheels, prints the versions, runs `make test-gpu`'s tests (4 at a time), then the GPU
# section of make bench, which starts nothing new after LIMIT seconds and lists what it left. The logs land in
# $OUT (each GPU row is printed as it is measured), and BENCHMARKS.md and benchmarks/results.json when the
# benchmark finished: copy those two back into the checkout (only the GPU section and the "gpu" key change).
# Exits non-zero when the tests or the benchmark failed or timed out.
set -uo pipefail
out=${OUT:-/tmp/lit-vae-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
if [ "${DRY:-0}" = 1 ]; then  # this script's own code on a CPU with the project's venv: no device time, no files changed
  export LIT_VAE_TEST_DEVICE=cpu PATH=$PWD/.venv/bin:$PATH
  device="--gpu-device cpu"
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed: fetch them with ../shared/gpu/fetch-wheels.sh .whl"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  device=""
fi
python3 -c 'import sys, torch, lightning, zuko; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "lightning", lightning.__version__, "zuko", zuko.__version__)' | tee -a "$out/gpu.txt"
workers=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 4" || echo "")
quick=$([ "${QUICK:-0}" = 1 ] && echo "--quick" || echo "")
timeout -k 15 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider $workers 2>&1 \
  | tee "$out/test-gpu.log" | tail -15
tests=${PIPESTATUS[0]}
echo "make test-gpu's tests: rc $tests (124: timed out)"
timeout -k 15 330 python3 benchmarks/run.py --sections gpu --time-limit "${LIMIT:-200}" $quick $device 2>&1 \
  | tee "$out/bench-gpu.log" | grep -v "^\(Epoch\|Predicting\|Validation\|Sanity\)" | tail -40
bench=${PIPESTATUS[0]}
echo "GPU benchmark: rc $bench (124: timed out; its rows measured so far are in bench-gpu.log)"
[ "$bench" = 0 ] && cp BENCHMARKS.md benchmarks/results.json "$out/"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
