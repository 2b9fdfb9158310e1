#!/usr/bin/env bash
# Run THERE, as the one command of a device call: the GPU work issue 3 asks for, within one lease.
#
#   device run: carry [".whl"], timeout_s 600,
#     command: bash scripts/device/gpu_check.sh 200
#
# 1. `benchmarks/bench_sam3_proposals.py --full`: full-size Sam3Config() (random weights) at 1008 px in bf16,
#    images/s, pairs/s, stage / bare-loop fraction  ->  $OUT/bench_full.json (+ its log)
# 2. a 60-step pilot of the demo trainer, to measure seconds per step on this GPU;
# 3. `scripts/train_demo_sam3.py` for TRAIN_SECONDS (the first argument, default 200) worth of steps, on
#    CUDA, in-process (no Ray there), with its own gold evaluation  ->  $OUT/sam3-demo.tar.gz + train log.
#    The call runs the whole recipe (stage 1 towers, stage 2 detector, stage 3 STAGE3_STEPS (default 500)
#    low-rate steps); train_demo_sam3.py's docstring says why.
#    Unpack the tarball over conceptengine/assets/sam3-demo/ here, then re-run the demo on the CPU.
# 4. with VERIFIER_STEPS=N (default 0: skipped), `scripts/train_demo_verifiers.py` for N steps per task on
#    CUDA, in-process  ->  $OUT/verifier-demo.tar.gz (mv/ and ev/ with their hold-out metrics.json).
# Extra trainer flags go in TRAIN_ARGS (e.g. TRAIN_ARGS="--hidden 96 --batch-size 16").
# Budget (one call may run 600 s): bench <= 150 s, pilot ~40 s, TRAIN_SECONDS, stage 2 and the gold
# evaluations ~100 s; keep VERIFIER_STEPS for a second call if the first used most of it.
# Set DEVICE=cpu BENCH=0 to rehearse the script on a CPU box (tiny step counts).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
TRAIN_SECONDS=${1:-200}
DEVICE=${DEVICE:-cuda}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"

if [ "${BENCH:-1}" = 1 ]; then
  echo "== bench --full"
  timeout 150 python3 benchmarks/bench_sam3_proposals.py --full 2>&1 | tee "$OUT/bench_full.log"
  tail -n 1 "$OUT/bench_full.log" > "$OUT/bench_full.json"
fi

echo "== pilot: seconds per training step on $DEVICE"
# shellcheck disable=SC2086
python3 scripts/train_demo_sam3.py --in-process --device "$DEVICE" --loader-workers 4 --steps 60 \
  --pretrain-steps 0 --calibrate-steps 0 --curve-points 1 --skip-report \
  --n-train 120 --n-gold 8 --work /tmp/pilot --out /tmp/pilot/out ${TRAIN_ARGS:-} > "$OUT/pilot.log" 2>&1 \
  || { tail -n 40 "$OUT/pilot.log"; exit 1; }
steps=$(python3 - "$TRAIN_SECONDS" <<'PY'
import json, sys
log = [json.loads(line) for line in open("/tmp/pilot/out/train_log.jsonl")]
# Steps 20..60 exclude the first steps' start-up cost (CUDA context, kernel selection).
per_step = (log[-1]["sec"] - log[0]["sec"]) / (log[-1]["step"] - log[0]["step"])
print(max(100, int(float(sys.argv[1]) / per_step) // 100 * 100))
print(f"pilot: {per_step:.4f} s/step", file=sys.stderr)
PY
) || exit 1
echo "== training the demo SAM 3: $steps steps"
# shellcheck disable=SC2086
python3 scripts/train_demo_sam3.py --in-process --device "$DEVICE" --loader-workers 4 --steps "$steps" \
  --calibrate-steps "${STAGE3_STEPS:-500}" --work /tmp/sam3-demo-work --out /tmp/sam3-demo-out ${TRAIN_ARGS:-} \
  2>&1 | tee "$OUT/train.log" | tail -n 60
tar -C /tmp/sam3-demo-out -czf "$OUT/sam3-demo.tar.gz" .

if [ "${VERIFIER_STEPS:-0}" -gt 0 ]; then
  echo "== training the demo verifiers: $VERIFIER_STEPS steps per task"
  python3 scripts/train_demo_verifiers.py --in-process --device "$DEVICE" --threads 4 \
    --steps-mv "$VERIFIER_STEPS" --steps-ev "$VERIFIER_STEPS" --work /tmp/verifier-work \
    --out /tmp/verifier-out 2>&1 | tee "$OUT/verifiers.log" | tail -n 40
  tar -C /tmp/verifier-out -czf "$OUT/verifier-demo.tar.gz" .
fi
ls -la "$OUT"
