#!/usr/bin/env bash
# The GPU suite (issue 18): the one command to run on a GPU machine. At most 8 minutes on one GPU.
#
#   benchmarks/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: benchmarks/out/gpu-<date>
#
# Checks that a CUDA device is visible (nvidia-smi and torch.cuda.is_available()), records `nvidia-smi -L` and the
# torch/CUDA versions, then runs these sections of benchmarks/run.py on the GPU, each in its own process under its
# own `timeout` (its share below plus whatever the sections before it left unused, so one slow section cannot eat
# the later sections' shares):
#   training        our fit loop vs a hand-written loop on the same GPU
#   speed_options   the speed options (compile, channels_last, ...)
#   throughput      sampling and Inception-architecture evaluation images/s
#   gpu_precision   ddpm_cifar10 steps/s in fp32, bf16, bf16 + compile, bf16 + channels_last; peak memory
#   data_loading    batches/s of the in-memory sets, on the device and in host memory, and of PNG folders
#   knn             the k-NN metrics at 1,000 / 10,000 / 50,000 per side, distances on the GPU; CUDA peak memory
# (the last two come last: they are the cheapest to lose when the suite runs out of time)
# Results: OUT_DIR/bench-cuda.json (a failed or timed-out section is recorded there with its error and the tail
# of its log OUT_DIR/<section>.log); the suite goes on after a failure and exits 1 at the end if any section failed.
# Nothing is installed except by `make venv` when .venv/bin/python is missing; no sudo, no network.
#
# Environment: GPU_SUITE_SECTIONS (comma-separated, default the six above, in that order), GPU_SUITE_BUDGETS
# (section=seconds,... overriding the shares below), GPU_SUITE_TOTAL_S (the whole suite's limit, default 480),
# GPU_SUITE_PAIRS (rounds of A B A B, default 3), GPU_SUITE_PYTHON (the interpreter; default .venv/bin/python, made by `make venv` if missing).
set -u -o pipefail

fail() {  # a one-line reason, exit status 2
    echo "gpu_suite: $*" >&2
    exit 2
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -gt 1 ]]; then
    fail "usage: benchmarks/gpu_suite.sh [OUT_DIR]"
fi
OUT="${1:-$REPO/benchmarks/out/gpu-$(date +%Y%m%d-%H%M%S)}"
[[ "$OUT" == /* ]] || OUT="$PWD/$OUT"  # a relative OUT_DIR is relative to where the suite was started
cd "$REPO" || fail "cannot enter the repository at $REPO"
SUITE_START=$SECONDS
TOTAL_BUDGET="${GPU_SUITE_TOTAL_S:-480}"  # 8 minutes, setup included (a `make venv` on a bare machine is not: it comes first)
SECTIONS="${GPU_SUITE_SECTIONS:-training,speed_options,throughput,gpu_precision,data_loading,knn}"
PAIRS="${GPU_SUITE_PAIRS:-3}"
declare -A BUDGET=([training]=110 [speed_options]=80 [throughput]=70 [gpu_precision]=110 [data_loading]=25 [knn]=55)  # 450 s + setup; training: 12 fresh processes
if [[ -n "${GPU_SUITE_BUDGETS:-}" ]]; then
    IFS=',' read -r -a overrides <<<"$GPU_SUITE_BUDGETS"
    for item in "${overrides[@]}"; do
        [[ "$item" =~ ^([a-z_]+)=([0-9]+)$ ]] || fail "GPU_SUITE_BUDGETS: '$item' is not section=seconds"
        BUDGET[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    done
fi

[[ "$TOTAL_BUDGET" =~ ^[0-9]+$ ]] || fail "GPU_SUITE_TOTAL_S: '$TOTAL_BUDGET' is not a number of seconds"
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || fail "GPU_SUITE_PAIRS: '$PAIRS' is not a positive number"

# ---- 1. a GPU must be visible ------------------------------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
    fail "no GPU visible: nvidia-smi is not installed here (no NVIDIA driver). Run the suite on a machine with an NVIDIA GPU."
fi
if ! GPU_LIST="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU [0-9]' <<<"$GPU_LIST"; then
    fail "no GPU visible: 'nvidia-smi -L' lists none ($(head -n 1 <<<"$GPU_LIST")). Run the suite on a machine with an NVIDIA GPU."
fi
GPU_COUNT="$(grep -c '^GPU [0-9]' <<<"$GPU_LIST")"
if [[ -z "${CUDA_VISIBLE_DEVICES:-}" && "$GPU_COUNT" -gt 1 ]]; then
    export CUDA_VISIBLE_DEVICES=0  # the suite measures one GPU
    echo "gpu_suite: $GPU_COUNT GPUs visible; measuring GPU 0 (CUDA_VISIBLE_DEVICES=0)"
fi

mkdir -p "$OUT" || fail "cannot create the output folder $OUT"
OUT="$(cd "$OUT" && pwd)"
printf '%s\n' "$GPU_LIST" >"$OUT/nvidia-smi-L.txt"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true

# ---- 2. the Python environment -----------------------------------------------------------------------------------
if [[ -n "${GPU_SUITE_PYTHON:-}" ]]; then
    PY="$GPU_SUITE_PYTHON"
else
    if [[ ! -x .venv/bin/python ]]; then
        echo "gpu_suite: no .venv here; creating it with 'make venv' (pip from the configured index)"
        make venv || fail "'make venv' failed; create .venv (pip install -e '.[dev]') and run the suite again"
        SUITE_START=$SECONDS  # the 8 minutes count from here
    fi
    PY="$REPO/.venv/bin/python"
fi
[[ -x "$PY" ]] || fail "$PY is not an executable Python (a .venv copied from another machine?); remove .venv and run again (make venv), or set GPU_SUITE_PYTHON"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1

"$PY" - "$OUT/versions.json" <<'EOF'
import json, platform, sys
try:
    import torch
except Exception as error:
    print(f"gpu_suite: {sys.executable} cannot import torch: {type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(3)
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(device_count=torch.cuda.device_count(), device=torch.cuda.get_device_name(0),
                capability=".".join(map(str, torch.cuda.get_device_capability(0))))
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=1)
print(f"gpu_suite: torch {info['torch']} (CUDA {info['torch_cuda']}, cuDNN {info['cudnn']}), "
      f"device: {info.get('device', 'none')}")
if not info["cuda_available"]:
    print(f"gpu_suite: torch {info['torch']} built for CUDA {info['torch_cuda']} cannot use the GPU", file=sys.stderr)
    sys.exit(4)
EOF
case $? in
    0) ;;
    3) fail "the Python environment has no working torch (see the line above): remove .venv and run again (make venv), or set GPU_SUITE_PYTHON" ;;
    4) fail "torch sees no CUDA device (torch.cuda.is_available() is False; see the line above): install a CUDA build of torch that matches the driver in nvidia-smi.txt" ;;
    *) fail "the torch/CUDA check failed with $PY (see above)" ;;
esac

# ---- 3. the sections, each under its own timeout -----------------------------------------------------------------
record_failure() {  # section rc log budget [message]: the error into OUT/bench-cuda.json next to the sections that ran
    "$PY" - "$OUT/bench-cuda.json" "$1" "$2" "$3" "$4" "${5:-}" <<'EOF'
import json, sys
from pathlib import Path
path, section, rc, log, budget, message = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
results = json.loads(path.read_text()) if path.exists() else {}
tail = Path(log).read_text(errors="replace").splitlines()[-40:] if log and Path(log).is_file() else []
timed_out = rc in (124, 137)
message = message or (f"timed out after {budget} s" if timed_out else f"exit status {rc}")
results[section] = {"error": message, "rc": rc, "timed_out": timed_out, "budget_s": budget,
                    "log": Path(log).name if log else None, "log_tail": tail}
path.write_text(json.dumps(results, indent=1))
EOF
}

FAILED=()
IFS=',' read -r -a SECTION_LIST <<<"$SECTIONS"
SECTIONS_START=$SECONDS
deadline=0  # seconds after SECTIONS_START by which the current section must end: the sum of the shares so far
for section in "${SECTION_LIST[@]}"; do
    # Its own share plus what the sections before it left unused; the later sections keep their shares.
    deadline=$((deadline + ${BUDGET[$section]:-100}))
    budget=$((deadline - (SECONDS - SECTIONS_START)))
    left=$((TOTAL_BUDGET - (SECONDS - SUITE_START)))
    ((budget > left)) && budget=$left
    if ((budget < 5)); then
        echo "gpu_suite: == $section skipped: no time left of the suite's $TOTAL_BUDGET s"
        record_failure "$section" 124 "" 0 "not run: no time left of the suite's $TOTAL_BUDGET s"
        FAILED+=("$section")
        continue
    fi
    log="$OUT/$section.log"
    echo "gpu_suite: == $section (at most $budget s; log $log)"
    BENCH_SECTION_BUDGET_S=$budget BENCH_SECTION_DEADLINE=$(($(date +%s) + budget)) timeout --signal=TERM --kill-after=10 "$budget" \
        "$PY" benchmarks/run.py --device cuda --sections "$section" --out "$OUT" --no-docs --pairs "$PAIRS" \
        >"$log" 2>&1
    rc=$?
    tail -n 3 "$log" | sed 's/^/    /'
    if ((rc != 0)); then
        if ((rc == 124 || rc == 137)); then
            echo "gpu_suite: $section TIMED OUT after $budget s"
        else
            echo "gpu_suite: $section FAILED (exit status $rc)"
        fi
        record_failure "$section" "$rc" "$log" "$budget"
        FAILED+=("$section")
    fi
done

# ---- 4. where the results are ------------------------------------------------------------------------------------
echo
echo "gpu_suite: $((SECONDS - SUITE_START)) s; results in $OUT/bench-cuda.json (logs and nvidia-smi output next to it)"
echo "gpu_suite: write its tables into docs/results.md with:"
echo "    python benchmarks/run.py --docs-from $OUT/bench-cuda.json"
if ((${#FAILED[@]})); then
    echo "gpu_suite: failed: ${FAILED[*]} (errors in bench-cuda.json, logs in $OUT)" >&2
    exit 1
fi
exit 0
