#!/usr/bin/env bash
# The GPU check, in about 5 minutes on one GPU (8 at most): the CUDA tests (both configs
# under auto precision and fp16 + gradient scaler, exact resume, batched = one-at-a-time
# decoding, serve), then a short speed table (training tokens/s of both configs, fp32 vs
# bf16 vs auto). Run it from the repository root on a machine with CUDA:
#
#     bash tests/gpu/gpu_check.sh             # logs under ${OUT:-gpu_check}/
#
# It uses the python3 there (PYTHON=... to choose another) with the torch it has; the app's
# packages must import (pip install -e '.[app,test]', or wheels carried to the machine).
set -uo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
out=${OUT:-gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS, for the exact-resume test
"$python" - <<'PY' 2>&1 | tee "$out/machine.txt"
import torch
assert torch.cuda.is_available(), "no CUDA GPU here"
print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
status=0
timeout 240 "$python" -m pytest -q -m cuda tests/gpu -p no:cacheprovider 2>&1 | tee "$out/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# the quickstart's data: prepared here from the bundled corpus, or carried prepared (the
# device tool's carry: benchmarks/data/quickstart, written by benchmarks.bench_precision on a CPU)
data=benchmarks/data/quickstart
if [ -f "$data/metadata.json" ] || "$python" -c "import chitchat_dataset" 2>/dev/null; then
    timeout 200 "$python" -m benchmarks.bench_precision --device cuda --seconds 10 --rounds 2 \
        --data "$data" --no-write 2>&1 | tee "$out/speed.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
    echo "no $data and no chitchat_dataset: carry $data to time training" | tee "$out/speed.txt"
    status=1
fi
exit $status
