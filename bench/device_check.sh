#!/usr/bin/env bash
# Issue 13's GPU measurements in one command, for a session that is lent a GPU machine.
#
# The machine has python3 with torch, transformers, typer, rich, safetensors, pytest and matplotlib, but
# neither diffusers nor pydantic, and it cannot reach PyPI. So, on this machine, first:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .wheels \
#       'diffusers==0.42.1' 'pydantic==2.14.4' 'pydantic-core==2.50.5' annotated-types typing-inspection \
#       importlib-metadata pyyaml
#   echo /.wheels/ >> .git/info/exclude
#
# then one device `run`: command "bash bench/device_check.sh", carry [".wheels"], timeout_s 540.
# It runs the device tests (the CUDA one included) and `bench_algorithms.py --device cuda` on
# digits-large and the tiny SD3 pipeline (synchronized timers), writes the log and the updated
# BENCHMARKS.md (section bench_algorithms_cuda) under $OUT, and exits non-zero if a step failed.
# DEVICE=cpu TARGETS=8 runs the same steps on the CPU (how this script is checked where there is no GPU).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -d .wheels ]; then
    "$PY" -m pip install -q --no-deps --no-index .wheels/*.whl || exit 1
fi
write=()
[ "$DEVICE" = cpu ] && write=(--no-write)  # the check run leaves BENCHMARKS.md alone
{
    status=0
    "$PY" -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"
    "$PY" -m pytest -q -p no:cacheprovider tests/test_device_resident.py || status=1
    "$PY" bench/bench_algorithms.py --device "$DEVICE" --models digits-large tiny-sd3 --repeats 3 --targets "${TARGETS:-200}" "${write[@]}" || status=1
    exit $status
} 2>&1 | tee "$OUT/device_check.log"
status=${PIPESTATUS[0]}
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
echo "device_check: log and BENCHMARKS.md in $OUT (status $status)"
exit "$status"
