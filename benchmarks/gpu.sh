#!/usr/bin/env bash
# GPU readiness: on a machine with a CUDA GPU, run the GPU tests and the README's speed figures on CUDA.
#
#   benchmarks/gpu.sh              # pytest -m gpu tests/test_gpu.py, then benchmarks/bench_gpu.py --device cuda
#                                  # (a DAS step, MAS steps up to five networks, five seeds trained together,
#                                  # IIA over >= 15 checkpoints); figures in out/bench_gpu.json, the device named
#   benchmarks/gpu.sh --dry-run    # the same on the CPU at toy sizes (seconds; CI runs it): checks the script,
#                                  # measures nothing; figures in out/bench_gpu_tiny.json, data kept in a temp folder
#
# Options: --out FILE (the JSON), --parts das,mas,seeds,dynamics, --no-tests. PYTHON=... picks the interpreter
# (default: .venv/bin/python when its torch fits the mode, else python3); `make gpu-check` runs it.
# The book's networks come from data/runs, trained there first on the GPU when missing (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0; tests=1; out=""; parts=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run|--cpu) dry=1 ;;
        --no-tests) tests=0 ;;
        --out) out="$2"; shift ;;
        --parts) parts="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$dry" = 1 ]; then
    want='import torch'
else
    want='import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'
fi
py="${PYTHON:-}"
if [ -z "$py" ]; then
    for cand in .venv/bin/python python3; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$want" 2>/dev/null; then py="$cand"; break; fi
    done
elif ! "$py" -c "$want" 2>/dev/null; then
    py=""
fi
if [ -z "$py" ]; then
    if [ "$dry" = 1 ]; then echo "gpu.sh: no Python with torch found (${PYTHON:-.venv/bin/python, python3}; set PYTHON=...)" >&2
    else echo "gpu.sh: no CUDA device seen by ${PYTHON:-.venv/bin/python or python3} (set PYTHON=..., or use --dry-run on a CPU)" >&2; fi
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "gpu.sh: $("$py" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "cuda", torch.version.cuda, "device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")')"

args=()
if [ "$dry" = 1 ]; then
    args+=(--device cpu --tiny)
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
    args+=(--device cuda)
fi
[ -n "$out" ] && args+=(--out "$out")
[ -n "$parts" ] && args+=(--parts "$parts")

status=0
if [ "$tests" = 1 ]; then
    log="$(mktemp)"
    # every test skips without CUDA: on a CPU (--dry-run) this only checks that they collect
    set +e
    "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    summary="$(grep -E '(passed|failed|skipped|error)' "$log" | tail -n 1 || true)"
    rm -f "$log"
    args+=(--tests "exit ${rc}: ${summary:-no summary}")
    [ "$rc" = 0 ] || status=1
fi
"$py" benchmarks/bench_gpu.py "${args[@]}" || status=1
exit $status
